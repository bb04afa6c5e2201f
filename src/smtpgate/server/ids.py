"""Session and queue ids: unique across worker processes and restarts, no shared state.

* Session ids (``next_session_id``): a random per-process prefix and a
  counter, in hex. A forked worker draws a new prefix (``os.register_at_fork``).
* Queue ids (``new_queue_id``, letters and digits as the 250 reply shows them): the time in
  microseconds (11 base-36 digits), the process id (5) and a per-process
  counter. Two processes alive at once differ in pid; one pid reused after a
  restart differs in time.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_prefix = secrets.token_hex(3)
_sessions = itertools.count(1)
_messages = itertools.count(1)


def _after_fork() -> None:
    global _prefix, _sessions, _pid  # a forked worker is a new process: new ids
    _prefix, _sessions, _pid = secrets.token_hex(3), itertools.count(1), _base36(os.getpid(), 5)


os.register_at_fork(after_in_child=_after_fork)


def next_session_id() -> str:
    return f"{_prefix}{next(_sessions):06x}"


def new_queue_id() -> str:
    micros = time.time_ns() // 1000
    return _base36(micros, 11) + _pid + _base36(next(_messages))


def _base36(number: int, width: int = 0) -> str:
    out = ""
    while number:
        number, digit = divmod(number, 36)
        out = _DIGITS[digit] + out
    return out.rjust(width, "0")


# This process's id in base 36 for the queue ids, computed once per process (and again
# after a fork): os.getpid() is a system call.
_pid = _base36(os.getpid(), 5)
