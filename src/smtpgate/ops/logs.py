"""Log output: text or JSON lines on standard error, and the AUTH failure line.

Theory of operation
-------------------
``configure`` installs one handler on the root logger, writing to standard
error (systemd's journal collects it), in the ``[log] format``:

text  ``2026-11-30 00:24:04,123 4711 INFO smtpgate.auth: auth failed ...``
      (time, process id, level, logger, message), the message as
      ``key=value`` fields;
json  one object per line: ``time`` (ISO 8601 with offset), ``level``,
      ``logger``, ``pid``, ``message``, and each field of an event as its own key.

``auth_failure`` writes the one line per failed AUTH that fail2ban
(contrib/fail2ban/) and administrators read: session, listener, client
address, mechanism, reply code, outcome and the login name as
``[log] user_names`` says -- ``plain`` (quoted, escaped, cut at
``MAX_NAME`` characters), ``hashed`` (``h:`` and an HMAC-SHA-256 under a key
kept in ``<data_dir>/log-key``: stable per name across workers and restarts,
but not reversible without the key) or ``omit``. Even in ``plain``, a name
that is no account is written hashed (``unknown:h:...``): people type their
password into the user name field, and it must not reach the log. The fixed fields come first and
the name last, so no name can forge a field a filter anchors on. Passwords,
hashes and AUTH payloads are never passed to this module.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import sys
import threading
import time
from datetime import datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any, TextIO

from smtpgate.config.schema import LogFormat
from smtpgate.config.schema import LogUserNames as UserNames

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MAX_NAME = 128  # characters of a login name written to the log
KEY_FILE = "log-key"
FIELDS = "smtpgate_fields"  # the LogRecord attribute carrying an event's fields
EVENT = "smtpgate_event"  # ... and its name

log = logging.getLogger("smtpgate.auth")


class _Names:
    """How login names appear in AUTH failure lines (process-wide, like logging itself)."""

    mode: UserNames = "plain"
    # This process only, until configure() loads the file. os.urandom, not secrets: the
    # latter imports hashlib and with it libcrypto, which the supervisor does not need.
    key: bytes = os.urandom(32)


class _Thread:
    """The listener thread of a threaded configuration (``configure(threaded=True)``)."""

    listener: QueueListener | None = None
    stream: logging.Handler | None = None  # the handler the listener writes with


class _Batches:
    """The queue between the loggers and the listener thread, with one wake-up per burst.

    ``queue.SimpleQueue.put`` wakes the waiting listener for every record: a futex call
    and a thread switch (with the GIL handed over and back) that cost more than the line
    itself, several times per message. Here a record is appended to a deque (atomic under
    the GIL), and only the first record after the listener went idle wakes it. Having
    written what there was, the listener pauses ``PAUSE`` seconds so that a busy
    server's lines gather into one batch, and goes idle only if none came. A line
    reaches standard error at once on a quiet server and at most ``PAUSE`` later on a
    busy one. ``QueueListener.stop`` appends its sentinel like any record.
    """

    PAUSE = 0.005  # seconds

    def __init__(self) -> None:
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._awake = threading.Event()  # set: the listener is not waiting for a wake-up

    def put_nowait(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if not self._awake.is_set():
            self._awake.set()

    def get(self, block: bool = True) -> logging.LogRecord:
        while True:
            if self._records:
                return self._records.popleft()
            if not block:
                raise queue.Empty
            time.sleep(self.PAUSE)  # let a burst gather
            if self._records:
                continue
            self._awake.clear()
            if not self._records:  # nothing came between the look and the clear
                self._awake.wait()


class _Handoff(QueueHandler):
    """Hands each record to the listener thread unformatted.

    ``QueueHandler.prepare`` would format the message here, in the calling thread (the
    event loop), so that the record carries only strings. We hand the record over as it
    is and let the listener's handler format it in its thread, which is the work we want
    off the loop. That is safe because formatting later gives the same text as formatting
    now: smtpgate's log calls pass strings, numbers and enum-like constants as arguments
    (immutable), and an event's fields dict (``event``) is built for that one call and
    never changed afterwards. ``exc_info`` travels as well and is formatted there too.
    A caller passing a mutable argument and changing it right after the call could see
    the later value logged; none does.
    """

    smtpgate = True  # one of ours: configure() replaces it

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure(
    fmt: LogFormat = "text",
    user_names: UserNames = "plain",
    key_dir: Path | None = None,
    *,
    stream: TextIO | None = None,
    level: int | None = None,
    threaded: bool | None = None,
) -> None:
    """(Re)install the standard-error handler; ``key_dir`` holds the key for "hashed".

    ``threaded``: records are queued by the calling thread and formatted and written by
    a listener thread (``QueueHandler`` + ``QueueListener``), so an event loop never
    waits for a write to standard error; ``stop_thread`` drains the queue. None keeps
    the mode this process has (a reload).
    """
    _Names.mode = user_names
    if user_names != "omit" and key_dir is not None:
        _Names.key = load_key(key_dir / KEY_FILE)
    if threaded is None:
        threaded = _Thread.listener is not None
    stop_thread()  # the old handler's queued lines are written first
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "smtpgate", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.smtpgate = True  # type: ignore[attr-defined]
    if threaded:
        records = _Batches()  # no locks at all: none that a fork could leave held
        _Thread.stream = handler
        _Thread.listener = QueueListener(records, handler)
        _Thread.listener.start()
        root.addHandler(_Handoff(records))
    else:
        root.addHandler(handler)
    if level is not None:
        root.setLevel(level)


def stop_thread() -> None:
    """Write every queued line and stop the listener thread; later lines are written
    directly (a process that ends, or ``configure`` replacing the handler)."""
    listener, handler = _Thread.listener, _Thread.stream
    if listener is None or handler is None:
        return
    _Thread.listener = _Thread.stream = None
    root = logging.getLogger()
    # One assignment: no moment without a handler, none with both (logging reads the list
    # once per record). From now on lines go straight out.
    root.handlers = [handler if isinstance(h, _Handoff) else h for h in root.handlers]
    listener.stop()  # the thread writes what was queued before the swap, then ends
    handler.flush()


def load_key(path: Path) -> bytes:
    """The log key, made on first use (32 random bytes, mode 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        key = os.urandom(32)
        fh.write(key)
    return key


def user_field(name: str | None, *, known: bool) -> str | None:
    """The login name as ``[log] user_names`` wants it in a log line; None: leave it out.
    ``known``: the name is an account (else "plain" hashes it too)."""
    if name is None or _Names.mode == "omit":
        return None
    if _Names.mode == "hashed":
        return hashed_name(name)
    return name[:MAX_NAME] if known else "unknown:" + hashed_name(name)


def hashed_name(name: str) -> str:
    import hashlib
    import hmac

    digest = hmac.new(_Names.key, name.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "h:" + digest.hexdigest()[:20]


def auth_failure(
    *, session: str, listener: str, ip: str, mechanism: str, reply: int, outcome: str,
    login: str | None, known: bool,
) -> None:
    """The one line per failed AUTH (see the module docstring for its fields)."""
    fields: dict[str, Any] = {
        "session": session, "listener": listener or "-", "ip": ip, "mechanism": mechanism or "-",
        "reply": reply, "outcome": outcome,
    }
    user = user_field(login, known=known)
    if user is not None:
        fields["user"] = user
    event(log, logging.INFO, "auth failed", fields)


def event(logger: logging.Logger, level: int, name: str, fields: dict[str, Any]) -> None:
    """Log ``name`` with ``fields``: ``k=v`` in text, separate keys in JSON."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
    logger.log(level, "%s %s", name, text, extra={FIELDS: fields, EVENT: name})


def _text_value(value: object) -> str:
    """Strings that could break the ``k=v`` layout (space, quote, '=', control) are
    quoted as JSON strings with spaces escaped too: no value holds a space, so none can
    imitate the fields a log filter (contrib/fail2ban) anchors on."""
    if isinstance(value, str):
        plain = value and value.isprintable() and not any(c in value for c in ' "=\\')
        return value if plain else json.dumps(value).replace(" ", "\\u0020")
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).astimezone()
        data: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            data["message"] = getattr(record, EVENT, "")
            data.update({k: v for k, v in fields.items() if k not in data})
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)
