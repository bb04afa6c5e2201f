"""The envelope log beside each Maildir: who sent each message, how, and to whom there.

Theory of operation
-------------------
A message's headers do not say who authenticated, what MAIL FROM and AUTH=
were, or which recipients of the envelope this Maildir stands for; the
envelope log does, one JSON object per line (ASCII, ``\\n``-terminated),
in ``<maildir>/smtpgate-envelope/<YYYY-MM-DD>.jsonl`` named by the UTC day
the message was received. Its ``message`` field is the message's file name
in ``new/`` (and later ``cur/``, where a reader appends ``:2,`` flags).

It is a log rather than a file per message because creating a file is the
most expensive step of a small delivery: a line costs an append to a file
that exists already, and the logs written lately stay open (``OpenLogs``),
so it costs no open either, only a ``stat`` of its name per batch, so that a
log deleted or renamed (rotated) meanwhile is made anew for the next line.
Every worker appends with ``O_APPEND`` and one ``write`` per line, which the
kernel does atomically for a local file, so lines of several processes never
mix. The line is written before the message is renamed into ``new/`` and is
flushed with the message file, so an acknowledged message always has its
line. A line whose message is in
neither ``new/`` nor ``cur/`` belongs to a message that was never
acknowledged (a crash or a failed commit) or that the user has deleted.
smtpgate never rewrites or deletes these files; expire them with the mail.

Privacy: a line lists only the recipients stored in that Maildir, never the
others (Bcc recipients stay private), and no header ever carries the AUTH=
value, the client's claim kept only so that a relay can pass it on (RFC 4954
section 5).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpgate.delivery.base import Envelope

ENVELOPE_DIR = "smtpgate-envelope"
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


def envelope_line(envelope: Envelope, recipients: list[str], unique: str) -> bytes:
    """The envelope of one message for one Maildir, as one line of JSON."""
    received = datetime.fromtimestamp(envelope.received_at, tz=UTC)
    record = {
        "version": 1,
        "message": unique,
        "queue_id": envelope.queue_id,
        "session_id": envelope.session_id,
        "peer": envelope.peer,
        "helo": envelope.helo,
        "esmtp": envelope.esmtp,
        "tls": envelope.tls,
        "authenticated_user": envelope.authenticated_user,
        "trusted_network": envelope.trusted_network,
        "mail_from": envelope.mail_from,
        "auth_param": envelope.auth_param,
        "body": envelope.body,
        "smtputf8": envelope.smtputf8,
        "recipients": recipients,
        "received_at": envelope.received_at,
        "received_at_utc": received.isoformat(),
        "extra": dict(envelope.extra),
    }
    # One line: json's C encoder (an indent would select its pure-Python one).
    # Key order as above: the message's name first, where a reader's eye (or grep) starts.
    text = json.dumps(record, ensure_ascii=True)
    return text.encode("ascii") + b"\n"


def log_name(received_at: float) -> str:
    """``<YYYY-MM-DD>.jsonl``, the UTC day of ``received_at``."""
    global _last_day  # noqa: PLW0603 - a one-day cache: strftime per message cost more
    start, end, name = _last_day
    if start <= received_at < end:
        return name
    received = datetime.fromtimestamp(received_at, tz=UTC)
    name = received.strftime("%Y-%m-%d.jsonl")
    start = received.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    # Up to a microsecond before midnight: datetime rounds to microseconds, so a time in
    # that last instant may already be the next day; such a time is never cached.
    _last_day = (start, start + 86_400 - 1e-6, name)
    return name


_last_day = (0.0, 0.0, "")  # [start, end) of the day last named, and its name


class OpenLogs:
    """The envelope logs written lately, kept open: opening and closing a log for every
    line cost more than the line's own write. ``append`` pins the log's descriptor until
    ``release`` (the group commit flushes it in between), so only an unpinned one is
    closed when more than ``keep`` are open. A log deleted or renamed since it was opened
    is opened again (checked with a ``stat`` when it is first pinned again), so lines
    never go to a file that no longer has its name. Thread-safe."""

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._open: dict[str, list[int]] = {}  # path -> [fd, pins, inode, device], oldest first
        self._lock = threading.Lock()

    def append(self, maildir: str, name: str, line: bytes) -> tuple[int, bool]:
        """Append ``line`` to ``<maildir>/smtpgate-envelope/<name>`` (made 0600 on demand,
        its folder 0700) in one write. The log's descriptor, pinned until ``release``, and
        whether this made the file (then its folder must be flushed too)."""
        path = log_path(maildir, name)
        with self._lock:
            entry, created = self._pin(path, maildir)
        try:
            if os.write(entry[0], line) != len(line):  # one write: appenders never interleave
                raise OSError(f"short write to {path}")
        except BaseException:
            self.release(path)
            raise
        return entry[0], created

    def release(self, path: str) -> None:
        """Unpin the log at ``path`` (as ``log_path`` names it)."""
        with self._lock:
            entry = self._open.get(path)
            if entry is not None:
                entry[1] -= 1
            self._trim()

    def close_all_unlocked(self) -> None:
        """Close every log (after a fork: the child's copies of the parent's)."""
        for entry in self._open.values():
            with contextlib.suppress(OSError):
                os.close(entry[0])
        self._open.clear()

    def _pin(self, path: str, maildir: str) -> tuple[list[int], bool]:
        entry = self._open.pop(path, None)
        if entry is not None and entry[1] == 0 and not _still_named(path, entry):
            os.close(entry[0])  # deleted or renamed since: a new file takes the lines
            entry = None
        created = False
        if entry is None:
            fd, created = _open_log(path, maildir)
            held = os.fstat(fd)
            entry = [fd, 0, held.st_ino, held.st_dev]
        entry[1] += 1
        self._open[path] = entry  # now the newest
        self._trim()
        return entry, created

    def _trim(self) -> None:
        excess = len(self._open) - self._keep
        if excess <= 0:
            return
        for path in [p for p, entry in self._open.items() if entry[1] == 0][:excess]:
            with contextlib.suppress(OSError):
                os.close(self._open.pop(path)[0])


def log_path(maildir: str, name: str) -> str:
    return f"{maildir}/{ENVELOPE_DIR}/{name}"


def open_logs() -> OpenLogs:
    """This process's ``OpenLogs`` (a forked child starts with its own)."""
    return _open_logs


def _forked() -> None:
    global _open_logs  # noqa: PLW0603 - per process, by design
    _open_logs.close_all_unlocked()  # the parent's copies; its lock may be held at the fork
    _open_logs = OpenLogs()


_open_logs = OpenLogs()
os.register_at_fork(after_in_child=_forked)


def _still_named(path: str, entry: list[int]) -> bool:
    """Whether ``path`` still names the file held open in ``entry``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return (named.st_ino, named.st_dev) == (entry[2], entry[3])


def _open_log(path: str, maildir: str) -> tuple[int, bool]:
    """The log's descriptor, and whether it was made now."""
    try:
        return os.open(path, _APPEND), False
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(f"{maildir}/{ENVELOPE_DIR}", 0o700)
    try:
        return os.open(path, _APPEND | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:  # another worker made it meanwhile
        return os.open(path, _APPEND), False


def read_envelopes(maildir: Path) -> list[dict[str, Any]]:
    """Every envelope logged for ``maildir``, oldest day first."""
    records: list[dict[str, Any]] = []
    for path in sorted((maildir / ENVELOPE_DIR).glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_bytes().splitlines() if line]
    return records


def find_envelope(maildir: Path, message: str) -> dict[str, Any] | None:
    """The envelope of the message stored as ``message`` (``:2,`` flags ignored)."""
    unique = message.split(":", 1)[0]
    return next((r for r in read_envelopes(maildir) if r.get("message") == unique), None)
