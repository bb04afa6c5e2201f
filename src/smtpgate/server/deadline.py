"""A connection's timeouts (RFC 5321 section 4.5.3.2) on one asyncio timer.

``touch(seconds)`` moves the idle deadline (``command_timeout`` after each
reply, ``data_timeout`` after each read in DATA); ``begin_transfer(seconds)``
caps every later deadline at the start of a message plus ``max_data_time``
until ``end_transfer``. Deadlines move on every read, so the timer is not
re-armed each time: it fires at the old time, finds the deadline moved and
sleeps again; it is re-armed at once only when a deadline moves earlier.
When a deadline has passed the owner's ``expired(transfer)`` is called
(``transfer`` says whether it was the message's time limit); it returns False
to be asked again shortly (a slow step is still running).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

RETRY = 0.05  # seconds between checks while the owner cannot time out yet


class Deadline:
    def __init__(self, expired: Callable[[bool], bool | None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._expired = expired
        self._loop = loop
        self._idle = 0.0
        self._transfer: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stopped = False

    @property
    def due(self) -> float:
        return self._idle if self._transfer is None else min(self._idle, self._transfer)

    def touch(self, seconds: float) -> None:
        self._idle = time.monotonic() + seconds
        self._rearm_if_late()

    def begin_transfer(self, seconds: float) -> None:
        self._transfer = time.monotonic() + seconds
        self._rearm_if_late()

    def end_transfer(self) -> None:
        self._transfer = None

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm_if_late(self) -> None:
        if self._timer is not None and self.due < self._timer_at and not self._stopped:
            self._timer.cancel()
            self._arm()

    def _arm(self) -> None:
        delay = max(RETRY, self.due - time.monotonic())
        self._timer_at = time.monotonic() + delay
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._stopped:
            return
        now = time.monotonic()
        transfer = self._transfer is not None and now >= self._transfer
        if now >= self.due and self._expired(transfer):
            return
        self._arm()
