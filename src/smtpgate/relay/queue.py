"""The durable queue on disk: ``<data_dir>/queue/`` (RFC 5321 section 4.5.4 "retry strategies"
assumes one; this is it).

Theory of operation
-------------------
Layout (directories 0700, files 0600)::

    queue/<ID>.msg      the message as accepted, then its record as accepted (below)
    queue/<ID>.json     its record once changed (a deferral, the CLI): supersedes the first
    queue/tmp/          files being written; nothing here is queued
    queue/corrupt/      entries that could not be parsed, moved aside, never deleted
    queue/kick          touched by the CLI: the running deliverer rescans

A record is the entry's envelope and delivery state (``relay.entry``), one
JSON line. An entry is one file until its record first changes, because
every file made, renamed and removed per message was what made queueing
cost more than Maildir delivery: the message's octets, then the record
line, then a fixed trailer ``smtpgate-record <16 digits>\n`` giving where
the record starts (the message's length). A ``.msg`` of an older version
(the message only, its record in ``.json``) has no trailer; one whose
message happens to end like a trailer (BDAT allows any ending) is still read
whole, since a trailer counts only if it points at a record of this entry.

Acceptance (``QueueWriter``): the message collects in memory while it
arrives (one over 1 MiB goes on to ``tmp/<ID>.msg`` at once:
``delivery.spool``). Its commit is a group commit (``delivery.groupcommit``:
messages finishing together share the flushes): ``stage`` writes
``tmp/<ID>.msg`` (created and locked then, unless it spilled) and appends
the record and trailer; one flush covers the files of the whole batch;
``publish`` renames it into ``queue/``, which queues it; one flush of
``queue/`` covers every rename of the batch. Only then does the server send
250. A crash before the rename leaves only ``tmp/`` files, which start-up
removes.

Updates (``save``) write a new record to ``tmp/``, fsync it and rename it
to (or over) ``<ID>.json`` (atomic on POSIX), then fsync the directory; the
``.msg`` file never changes. Removal unlinks the message first (the entry is
gone), then the ``.json`` if any, so a crash in between leaves only a
``.json`` without its message, which start-up removes.

Claiming (``claim``): whoever delivers, changes or removes an entry holds an
exclusive ``flock`` on its ``.msg`` file (never replaced, so the lock is on
one inode for the entry's life). The writer holds it from the file's
creation until its commit has settled. Several server processes (``[server] workers``) and the CLI
therefore never work on the same entry at once; a busy entry is skipped.

Hand-over (``Handover``): once committed, a message that was held in memory
(not spilled) is offered to the deliverer with its entry, so the deliverer
need not read back what was just written. ``claim`` says whether the entry
has a ``.json`` (its record changed since acceptance, by the CLI or another
process); only if it has none is the copy used, since the record inside the
``.msg`` file never changes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smtpgate.delivery.base import DeliveryError
from smtpgate.delivery.groupcommit import Staged, committer, fsync_dir, write_all
from smtpgate.delivery.spool import Spool
from smtpgate.relay.entry import CorruptEntry, QueueEntry, parse

log = logging.getLogger("smtpgate.relay")

QUEUE_DIR = "queue"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_ID_CHARS = string.digits + string.ascii_uppercase  # ASCII order: ids sort by time
_BUFFER = 64 * 1024
STALE_TMP = 600.0  # seconds: an unlocked tmp record older than this is a crash leftover
TRAILER = b"smtpgate-record %016d\n"  # ends a .msg: where its record starts (module doc)
_TRAILER_SIZE = len(TRAILER % 0)
_TRAILER_RE = re.compile(rb"smtpgate-record (\d{16})\n")


def embedded_record(record: bytes, message_size: int) -> bytes:
    """What follows the message in its ``.msg`` file: the record and the trailer."""
    return record + TRAILER % message_size


def _split(fd: int) -> tuple[int, int] | None:
    """Where the record starts and where the trailer starts in the ``.msg`` open as
    ``fd``; None for a file without a trailer (written by an older version)."""
    size = os.fstat(fd).st_size
    if size < _TRAILER_SIZE:
        return None
    end = size - _TRAILER_SIZE
    match = _TRAILER_RE.fullmatch(os.pread(fd, _TRAILER_SIZE, end))
    if match is None:
        return None
    start = int(match[1])
    if start > end:
        raise CorruptEntry("the record trailer points past the end of the file")
    return start, end


def _own_record(fd: int, queue_id: str) -> tuple[int, int] | None:
    """``_split``, but only if the trailer points at a record of ``queue_id``: else the
    file is an older version's message alone, whatever its last line says."""
    try:
        parts = _split(fd)
        if parts is not None:
            parse(os.pread(fd, parts[1] - parts[0], parts[0]), queue_id)
    except CorruptEntry:
        return None
    return parts


@dataclass(frozen=True, slots=True)
class Handover:
    """A message just queued, handed to the deliverer in memory (module docstring)."""

    entry: QueueEntry
    message: bytes


class Busy(Exception):
    """Another process or task holds the entry."""


class Missing(Exception):
    """No such queue entry."""


def new_queue_id() -> str:
    """An id for a message the relay itself queues (a DSN): letters and digits, 11 base-36
    digits of microseconds (like the server's ids, so names sort by time), 6 random."""
    micros = time.time_ns() // 1000
    digits = ""
    while micros:
        micros, rest = divmod(micros, 36)
        digits = _ID_CHARS[rest] + digits
    return digits.rjust(11, "0") + "".join(secrets.choice(_ID_CHARS) for _ in range(6))


def valid_id(queue_id: str) -> bool:
    return 0 < len(queue_id) <= 64 and queue_id.isascii() and queue_id.isalnum()


class QueueStore:
    """The files of ``queue/`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
        self.tmp = root / "tmp"
        self.corrupt = root / "corrupt"
        self.kick_file = root / "kick"

    def ensure(self) -> None:
        for folder in (self.root, self.tmp, self.corrupt):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def message_path(self, queue_id: str) -> Path:
        return self.root / f"{queue_id}.msg"

    def state_path(self, queue_id: str) -> Path:
        return self.root / f"{queue_id}.json"

    # -- reading -----------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """The ids of every queued entry (those with a record), oldest id first."""
        try:
            with os.scandir(self.root) as entries:
                names = [e.name[:-4] for e in entries if e.name.endswith(".msg")]
        except FileNotFoundError:
            return []  # nothing was ever queued
        return sorted(n for n in names if valid_id(n))

    def load(self, queue_id: str) -> QueueEntry:
        """The entry; ``Missing`` if gone, ``CorruptEntry`` if unreadable."""
        if not valid_id(queue_id):
            raise Missing(queue_id)
        try:
            return parse(self.state_path(queue_id).read_bytes(), queue_id)  # changed since
        except FileNotFoundError:
            pass
        with self._open_message(queue_id) as fd:
            parts = _split(fd)
            if parts is None:
                raise CorruptEntry("no record: neither a .json file nor one in the .msg")
            start, end = parts
            return parse(os.pread(fd, end - start, start), queue_id)

    def read_message(self, queue_id: str, limit: int | None = None) -> bytes:
        """The message as accepted (its first ``limit`` octets, if given)."""
        with self._open_message(queue_id) as fd:
            parts = _own_record(fd, queue_id)
            size = os.fstat(fd).st_size if parts is None else parts[0]
            if limit is not None:
                size = min(size, limit)
            chunks, done = [], 0
            while done < size:  # pread may return less than asked for
                chunk = os.pread(fd, size - done, done)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
            return b"".join(chunks)

    @contextlib.contextmanager
    def _open_message(self, queue_id: str) -> Iterator[int]:
        try:
            fd = os.open(f"{self._root}/{queue_id}.msg", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Missing(queue_id) from None
        try:
            yield fd
        finally:
            os.close(fd)

    # -- writing -----------------------------------------------------------------------------

    def writer(self, entry: QueueEntry) -> QueueWriter:
        return QueueWriter(self, entry)

    def save(self, entry: QueueEntry) -> None:
        """Write the record to ``<ID>.json`` atomically (tmp, fsync, rename, fsync the
        directory): it supersedes the one in the ``.msg`` file from now on."""
        tmp = self.tmp / f"{entry.id}.json.{secrets.token_hex(4)}"
        try:
            _write_synced(tmp, entry.to_json())
            os.rename(tmp, self.state_path(entry.id))
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(self.root)

    def remove(self, queue_id: str) -> None:
        """Message first, then a changed record; then flush the directory (waits: not on
        the loop)."""
        committer().commit(self.removal(queue_id))

    def removal(self, *queue_ids: str) -> Removal:
        """``remove`` as a group commit job: removals and commits finishing together share
        the flush of ``queue/`` (the deliverer removes one entry per delivered message, and
        those that finish together as one job)."""
        return Removal(self, queue_ids)

    def read_if_due(self, queue_id: str, now: float) -> tuple[QueueEntry, bytes | None]:
        """The entry, and its message if it is due to be sent now (one trip to a thread)."""
        entry = self.load(queue_id)
        return entry, self.read_message(queue_id) if entry.due(now) else None

    def move_corrupt(self, queue_id: str, reason: str) -> None:
        """Move both files to ``corrupt/`` (never deleted) with one log line."""
        for path in (self.state_path(queue_id), self.message_path(queue_id)):
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, self.corrupt / path.name)
        fsync_dir(self.root)
        log.error("queue=%s unreadable queue record moved to %s: %s", queue_id, self.corrupt,
                  reason)

    def kick(self) -> None:
        """Tell a running deliverer to rescan (the CLI calls this after a change)."""
        with contextlib.suppress(OSError):
            self.kick_file.touch(mode=0o600)
            os.utime(self.kick_file)

    def kick_mtime(self) -> float:
        try:
            return self.kick_file.stat().st_mtime
        except OSError:
            return 0.0

    # -- claiming and start-up ---------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self, queue_id: str) -> Iterator[bool]:
        """Hold the entry's lock; ``Busy`` if someone else does, ``Missing`` if it is gone.
        Yields whether its record changed since acceptance (a ``.json``: ``Handover``)."""
        base = f"{self._root}/{queue_id}"  # plain strings: once per delivery, on the loop
        try:
            fd = os.open(base + ".msg", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Missing(queue_id) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(queue_id) from None
            if os.fstat(fd).st_nlink == 0:
                raise Missing(queue_id)  # removed between our open and our lock
            yield os.path.exists(base + ".json")
        finally:
            _release(fd)

    def clean_leftovers(self) -> int:
        """Remove what no acknowledged message owns: old tmp files, and a ``.json`` without
        its ``.msg`` (a removal cut short). A ``.msg`` in ``queue/`` is never removed here:
        one without a record is moved aside by the deliverer (``move_corrupt``)."""
        removed = 0
        old = time.time() - STALE_TMP
        for path in [*self.tmp.iterdir(), *self.root.glob("*.json")]:
            try:
                if path.parent == self.tmp:
                    if path.suffix != ".msg" and path.stat().st_mtime > old:
                        continue  # a record another process is writing right now
                elif self.message_path(path.stem).exists():
                    continue
            except FileNotFoundError:
                continue  # another process renamed or removed it since the listing
            if _unlink_unless_locked(path):
                removed += 1
        return removed


class Removal:
    """The group commit job of ``QueueStore.remove``, for one entry or several: each is
    unlinked record first, then message; ``outcome`` tells how each one went."""

    def __init__(self, store: QueueStore, queue_ids: tuple[str, ...]) -> None:
        self.store = store
        self.queue_ids = queue_ids
        self._failed: dict[str, OSError] = {}  # unlinking went wrong for these
        self._flush: OSError | None = None  # the flush after the unlinks failed: for all

    def stage(self) -> Staged:
        return [], []

    def publish(self) -> list[str]:
        for queue_id in self.queue_ids:
            try:
                for path in (self.store.message_path(queue_id), self.store.state_path(queue_id)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            except OSError as exc:
                self._failed[queue_id] = exc
        return [os.fspath(self.store.root)]

    def settle(self, error: OSError | None) -> DeliveryError | None:
        self._flush = error
        failed = next(iter(self._failed.values()), error)
        return None if failed is None else _error(failed, "removing the entry")

    def outcome(self, queue_id: str) -> DeliveryError | None:
        """After ``settle``: None once this entry's removal is durable."""
        failed = self._failed.get(queue_id, self._flush)
        return None if failed is None else _error(failed, "removing the entry")


class QueueWriter:
    """One message being accepted into the queue (see the module docstring)."""

    def __init__(self, store: QueueStore, entry: QueueEntry) -> None:
        self.store = store
        self.entry = entry
        # Plain strings: pathlib's conversions showed in the profile of a small message.
        tmp, root = os.fspath(store.tmp), os.fspath(store.root)
        self._tmp_msg, self._msg = f"{tmp}/{entry.id}.msg", f"{root}/{entry.id}.msg"
        # In memory until it commits or grows; kept after the commit for the hand-over.
        self._spool = Spool(self._create_message_file, keep=True)
        self._published = False
        self._ended = False  # committed or aborted

    def write(self, data: bytes) -> None:
        """On the event loop: into memory, or appended to the spill file (``spool``)."""
        if self._ended:
            raise DeliveryError("queue: write after the end")
        try:
            self._spool.write(data)
            self.entry.size += len(data)
        except OSError as exc:
            self.abort()
            raise _error(exc, "writing the message") from exc

    def commit(self) -> None:
        """Durable when this returns (waits for its group commit: not on the event loop)."""
        if self._ended:
            raise DeliveryError("queue: commit without a message")
        committer().commit(self)

    # -- the group commit's steps (``delivery.groupcommit``), in the committer thread -------

    def stage(self) -> Staged:
        """Write the message, then its record and trailer: flushed before the rename."""
        message = self._spool.finish()
        # entry.size counts every octet write() took: where the message ends, the record starts
        write_all(message, embedded_record(self.entry.to_json(), self.entry.size))
        return [message], []

    def publish(self) -> list[str]:
        """The rename that queues it; the directory renamed into."""
        os.rename(self._tmp_msg, self._msg)
        self._published = True
        return [os.fspath(self.store.root)]

    def settle(self, error: OSError | None) -> DeliveryError | None:
        """Close the files (releasing the lock); on ``error`` remove what was written."""
        if error is None:
            self._ended = True
            self._close()
            return None
        self.abort()
        return _error(error, "committing the message")

    def handover(self) -> Handover | None:
        """The committed message for the deliverer, once (None if it spilled to its file)."""
        message, self._spool.whole = self._spool.whole, None
        if message is None or not self._published or not self._ended:
            return None
        return Handover(self.entry, message)

    def abort(self) -> None:
        """Leave nothing behind (also after a successful commit: used to undo a split)."""
        self._ended = True
        path = self._msg if self._published else self._tmp_msg

        def remove() -> None:
            with contextlib.suppress(OSError):
                os.unlink(path)

        self._spool.discard(remove)

    def _create_message_file(self) -> int:
        """``tmp/<ID>.msg``, locked (off the event loop; ``queue/`` made on demand)."""
        try:
            fd = os.open(self._tmp_msg, _CREATE, 0o600)
        except FileNotFoundError:
            self.store.ensure()
            fd = os.open(self._tmp_msg, _CREATE, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _close(self) -> None:
        self._spool.close()  # also releases the lock


def _release(fd: int) -> None:
    """Close a claimed ``.msg`` (letting go of its lock). If it was removed meanwhile,
    this last close frees its inode, which truncates it and journals that, and may wait
    for the disk: the committer thread does it then, not the event loop."""
    try:
        removed = os.fstat(fd).st_nlink == 0
    except OSError:
        removed = False
    if removed:
        committer().submit(_LastClose(fd), _ignore)
    else:
        os.close(fd)


class _LastClose:
    """A group commit job that only closes a descriptor, in the committer thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def stage(self) -> Staged:
        return [], []

    def publish(self) -> list[str]:
        return []

    def settle(self, error: OSError | None) -> DeliveryError | None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        return None


def _ignore(error: DeliveryError | None) -> None:
    pass


def _error(exc: OSError, step: str) -> DeliveryError:
    reason = exc.strerror or exc.__class__.__name__
    return DeliveryError(f"queue: {step} failed: {reason}", disk_full=exc.errno in _DISK_FULL)


def _write_synced(path: Path, data: bytes) -> None:
    with os.fdopen(os.open(path, _CREATE, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _unlink_unless_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
        return True
    except OSError:  # locked by a writer in another process, or already gone
        return False
    finally:
        os.close(fd)
