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

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from smtpgate.config.schema import LogFormat
from smtpgate.config.schema import LogUserNames as UserNames

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MAX_NAME = 128  # characters of a login name written to the log
KEY_FILE = "log-key"
BATCH_DELAY = 0.02  # seconds the listener thread lets lines gather before writing them
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

    listener: _Batches | None = None
    stream: logging.Handler | None = None  # the handler the listener writes with


class _Handoff(logging.Handler):
    """Hands each record to the listener thread unformatted (``logging.handlers`` is not
    used: it imports ``pickle``, about half a MiB of every worker at rest).

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

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None]) -> None:
        super().__init__()
        self.queue = records

    def handle(self, record: logging.LogRecord) -> bool:
        """``Handler.handle`` without its lock: ``SimpleQueue.put`` is thread-safe already,
        and the lock cost two calls per line on the event loop."""
        if self.filters and not self.filter(record):
            return False
        self.queue.put_nowait(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(record)


class _Batches:
    """A listener thread that writes lines in batches: one wake-up and one write per batch.

    The standard listener wakes for every record, and on a busy worker every wake-up is
    a thread switch and a GIL hand-over on the event loop's core. This one sleeps until a
    record arrives, lets the lines of the next ``BATCH_DELAY`` seconds gather, then
    formats them all and writes them with one ``write`` and one flush. A line is written
    at most about ``BATCH_DELAY`` after it was logged; ``stop`` still writes everything
    queued before it.
    """

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None],
                 handler: logging.StreamHandler[Any]) -> None:
        self.records = records
        self.stream_handler = handler
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._monitor, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far, then end the thread."""
        if self._thread is not None:
            self.records.put_nowait(None)  # the sentinel
            self._thread.join()
            self._thread = None

    def _monitor(self) -> None:
        records = self.records
        while True:
            batch = [records.get()]  # asleep while nothing is logged
            time.sleep(BATCH_DELAY)
            while True:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            lines = [record for record in batch if record is not None]
            self._write(lines)
            if len(lines) < len(batch):  # stop()'s sentinel (None): that was the last batch
                return

    def _write(self, batch: list[logging.LogRecord]) -> None:
        handler = self.stream_handler
        lines = []
        for record in batch:
            try:
                lines.append(handler.format(record) + handler.terminator)
            except Exception:
                handler.handleError(record)
        if not lines:
            return
        handler.acquire()
        try:
            handler.stream.write("".join(lines))
            handler.flush()
        except Exception:
            handler.handleError(batch[-1])
        finally:
            handler.release()


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
    a listener thread (the pattern of logging's ``QueueHandler`` and ``QueueListener``),
    so an event loop never waits for a write to standard error; ``stop_thread`` drains
    the queue. None keeps the mode this process has (a reload).
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
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.smtpgate = True  # type: ignore[attr-defined]
    if threaded:
        _lean_records()
        # SimpleQueue: no Python-level locks that a fork could leave held.
        records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        _Thread.stream = handler
        _Thread.listener = _Batches(records, handler)
        _Thread.listener.start()
        root.addHandler(_Handoff(records))
    else:
        root.addHandler(handler)
    if level is not None:
        root.setLevel(level)


def _lean_records() -> None:
    """Records without what no format of ours shows: the caller's file, line and function
    (``findCaller`` walks the stack for every record), the thread and the multiprocessing
    process name (the logging HOWTO's "Optimization" switches). The process id stays."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.setLogRecordFactory(_LeanRecord)


class _LeanRecord(logging.LogRecord):
    """A ``LogRecord`` made without the work ``_lean_records`` switched off: the standard
    ``__init__`` still derives a file and module name from the (unknown) path, and asks
    the kernel for the process id, on every line; a tenth of a W2 handshake's CPU went
    there. Every attribute a format may name is set, as the standard one sets it."""

    def __init__(  # noqa: PLR0917 -- the factory signature logging calls
        self, name: str, level: int, pathname: str, lineno: int, msg: object,
        args: Any, exc_info: Any, func: str | None = None, sinfo: str | None = None,
        **kwargs: Any,
    ) -> None:
        created = time.time()
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # logging's "%(key)s" form, as LogRecord does
        self.name = name
        self.msg = msg
        self.args = args
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = self.filename = pathname
        self.module = "Unknown module"
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = sinfo
        self.lineno = lineno
        self.funcName = func or "(unknown function)"  # what Logger._log passes without a caller
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        self.thread = self.threadName = self.processName = self.taskName = None
        self.process = _Pid.value


class _Pid:
    """This process's id, read once and again after a fork (a worker is a fork)."""

    value = os.getpid()

    @classmethod
    def refresh(cls) -> None:
        cls.value = os.getpid()


os.register_at_fork(after_in_child=_Pid.refresh)


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


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``; the date and time are formatted once per second, not per line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._stamp = (-1, "")  # (second, its text): one attribute, replaced whole

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached, text = self._stamp
        if second != cached:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp = (second, text)
        return f"{text},{int(record.msecs):03d}"  # logging.Formatter.default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        """``TEXT_FORMAT`` as one f-string: ``Formatter.format`` looks for ``asctime`` in
        the format and goes through a ``%`` of the record's whole ``__dict__`` per line.
        The same text (tests/ops/test_logs.py compares); tracebacks take the long way."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = message = record.getMessage()
        record.asctime = stamp = self.formatTime(record)
        return f"{stamp} {record.process} {record.levelname} {record.name}: {message}"


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
