"""Maildir delivery: one Maildir per recipient under ``<data_dir>/mail/`` (maildir(5)).

Theory of operation
-------------------
Mailbox names. ``maildir_name`` turns the recipient address (as written
between ``<`` and ``>``) into one directory name: ASCII letters lower-cased,
every character outside ``[a-z0-9._+@-]`` replaced by ``%xx`` for each byte of
its UTF-8 form (lower-case hex, like ``%2e``), and a leading ``.`` written
``%2e``. Only ASCII is case-mapped: ``str.lower()`` would turn U+212A KELVIN
SIGN into ASCII ``k`` (and U+0130 into ``i`` plus a combining dot), so a
different address would share a Maildir. ``%`` itself is encoded, so two
addresses share a name only when they differ in the case of ASCII letters
(``A@x`` and ``a@x``: the message is stored once). The result never contains
``/``, ``\\`` or NUL and is never ``.``, ``..`` or hidden, so no address can
name a path outside ``mail/``. A name longer than NAME_MAX (255 octets) can
never be created: ``check_recipient`` refuses such an address at its RCPT
(``553 5.1.3``), so the transaction's other recipients still get the message.

Writing. ``start`` and ``write`` touch no disk: the message collects in
memory, and one larger than 1 MiB goes on to its tmp file, which a worker
thread creates meanwhile (``spool``). The tmp file is ``tmp/<unique>`` in
the first recipient's Maildir (mode 0600, ``O_EXCL``); that Maildir
(``tmp``, ``new``, ``cur``, mode 0700) is made only when the open finds it
missing. ``commit`` is a group commit (``groupcommit``: messages finishing
together share the flushes), whose steps are, for each message of the batch:

1. ``stage``: write the message to its tmp file (creating it, unless it
   spilled there already); for every other recipient hard-link the
   file into that recipient's ``tmp/`` (copy when linking fails, e.g. across
   file systems); append the envelope's line to each Maildir's envelope log
   (``envelopes``: ``smtpgate-envelope/<day>.jsonl``);
2. one flush of every file of the batch (and of an envelope folder that got a
   new log);
3. ``publish``: rename every ``tmp/<unique>`` to ``new/<unique>`` -- the only
   step that makes a message visible, and the last one that changes names;
4. one flush of every ``new/`` directory renamed into;

and only then does ``commit`` return (or the server's callback run). Any
``OSError`` on the way unlinks everything this delivery created (tmp files
and messages already renamed into ``new/``; an envelope line stays, without
its message) and gives a
``DeliveryError`` (``disk_full`` for ENOSPC/EDQUOT): a message is in every
recipient's ``new/`` or in none. ``abort`` removes whatever exists so far.
A crash leaves its tmp files: ``recover`` removes them at the next start
(see ``recovery``).

Every directory created under the root (the root and its missing parents
included) is 0700 and every file 0600: their names are addresses.

The unique name is ``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>`` (the modern
Maildir form; ``/`` and ``:`` in the host name written as ``\\057``/``\\072``),
unique across processes, threads and many deliveries per second.

The envelope (session id, peer, HELO, TLS, authenticated user, MAIL FROM,
AUTH= parameter, the recipients of *this* Maildir, time) is kept in the
envelope log, not in the message (``envelopes``): no header ever carries the
AUTH= value, and a line never lists the other recipients of the message, so
Bcc recipients stay private.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import itertools
import logging
import os
import random
import secrets
import shutil
import socket
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from smtpgate.delivery import recovery
from smtpgate.delivery.base import DeliveryError, Envelope
from smtpgate.delivery.envelopes import (
    ENVELOPE_DIR,
    envelope_line,
    log_name,
    log_path,
    open_logs,
)
from smtpgate.delivery.groupcommit import Staged, committer, process_id
from smtpgate.delivery.spool import Spool
from smtpgate.protocol.replies import MAILBOX_NOT_ALLOWED, Reply

__all__ = ["NAME_MAX", "MaildirDelivery", "MaildirTarget", "maildir_name"]

NAME_MAX = 255  # bytes in one directory entry (Linux NAME_MAX)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._+@-")
_SAFE_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_BUFFER = 64 * 1024
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
log = logging.getLogger("smtpgate.delivery")


def maildir_name(recipient: str) -> str:
    """The Maildir directory name for ``recipient``; ValueError when it is empty."""
    if not recipient:
        raise ValueError("empty recipient address")
    out: list[str] = []
    # ASCII only: str.lower() maps U+212A KELVIN SIGN to "k", sharing kate@'s Maildir.
    for index, char in enumerate(recipient.translate(_ASCII_LOWER)):
        if char in _SAFE and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _maildir_host(hostname: str) -> str:
    """The host part of unique names: no '/', ':' or anything unusual (written \\ooo)."""
    return "".join(c if c in _SAFE_HOST else f"\\{ord(c):03o}" for c in hostname) or "localhost"


class _UniqueNames:
    """``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>``, thread-safe. The random part only
    guards against a clock set back under a reused pid: it need not be secret, so it
    comes from a generator seeded per process, not a system call per name."""

    def __init__(self, hostname: str) -> None:
        self.host = _maildir_host(hostname)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._pid = 0
        self._random = random.Random()

    def next(self) -> str:
        with self._lock:
            seq = next(self._seq)
            if self._pid != process_id():  # first use, or a forked child
                self._pid = process_id()
                self._random.seed(secrets.token_bytes(16))
            noise = self._random.getrandbits(32)
        sec, usec = divmod(time.time_ns() // 1000, 1_000_000)
        return f"{sec}.M{usec}P{self._pid}Q{seq}R{noise:08x}.{self.host}"


class MaildirTarget:
    """A ``DeliveryTarget`` writing one Maildir per recipient under ``root``."""

    blocking = False  # start() and write() touch no disk (``spool``); the commit is grouped
    group_commit = True  # commit_soon: flushes shared with the messages finishing together

    def __init__(self, root: Path, *, hostname: str | None = None) -> None:
        self.root = root
        self._names = _UniqueNames(hostname or socket.gethostname())

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        """553 5.1.3 for an address whose Maildir name cannot exist (empty, or > NAME_MAX)."""
        try:
            _mailbox_name(address)
        except DeliveryError as exc:
            return MAILBOX_NOT_ALLOWED.with_text(f"Mailbox name not allowed: {exc}")
        return None

    def start(self, envelope: Envelope) -> MaildirDelivery:
        """A new delivery (no I/O: its file is made when it commits or grows large)."""
        return MaildirDelivery(
            self.root, envelope, _group(envelope.recipients), self._names.next()
        )

    def recover(self) -> int:
        """Remove what crashed deliveries left in tmp/ (see ``recovery``); the count."""
        removed = recovery.recover(self.root, self._names.host)
        log.info("maildir recovery: removed %d partial files under %s", removed, self.root)
        return removed

    def maildir(self, recipient: str) -> Path:
        """The Maildir of ``recipient`` (it may not exist yet)."""
        return self.root / maildir_name(recipient)


_NAMES: dict[str, str] = {}  # recent recipients' Maildir names: each is asked at RCPT and start
_NAMES_KEPT = 4096


def _mailbox_name(recipient: str) -> str:
    """``maildir_name``, or a permanent DeliveryError when no such directory can exist."""
    name = _NAMES.get(recipient)
    if name is not None:
        return name
    try:
        name = maildir_name(recipient)
    except ValueError:
        raise DeliveryError("empty address", temporary=False) from None
    if len(name.encode()) > NAME_MAX:
        raise DeliveryError(
            f"address too long to store (its mailbox name exceeds {NAME_MAX} octets)",
            temporary=False,
        )
    if len(_NAMES) >= _NAMES_KEPT:
        _NAMES.clear()
    _NAMES[recipient] = name
    return name


def _group(recipients: tuple[str, ...]) -> dict[str, list[str]]:
    """Maildir name -> the recipients stored there, in envelope order."""
    if not recipients:
        raise DeliveryError("no recipients", temporary=False)
    groups: dict[str, list[str]] = {}
    for recipient in recipients:
        groups.setdefault(_mailbox_name(recipient), []).append(recipient)
    return groups


class _State(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"
    FAILED = "failed"
    ABORTED = "aborted"


class MaildirDelivery:
    """One message on its way into one or more Maildirs (see the module docstring)."""

    def __init__(
        self, root: Path, envelope: Envelope, groups: dict[str, list[str]], unique: str
    ) -> None:
        self._envelope = envelope
        self._groups = groups
        # Plain strings: pathlib's joins cost more than the rest of a small delivery.
        self._maildirs = [f"{root}/{name}" for name in groups]
        self._root = root
        self._unique = unique
        self._state = _State.OPEN
        self._spool = Spool(self._create_message_file)
        self._created: list[str] = []  # tmp files and copies, unlinked on failure
        self._renamed: list[str] = []  # files in new/, unlinked if a later step fails
        self._open: list[int] = []  # copies, open until flushed
        self._logs: list[str] = []  # envelope logs, pinned open until flushed

    @property
    def unique_name(self) -> str:
        return self._unique

    def write(self, data: bytes) -> None:
        """On the event loop: into memory, or appended to the spill file (``spool``)."""
        self._require_open()
        try:
            self._spool.write(data)
        except OSError as exc:
            self._fail(exc, "writing the message")

    def commit(self) -> None:
        """Durable when this returns (waits for its group commit: not on the event loop)."""
        self._require_open()
        committer().commit(self)

    def commit_soon(self, done: Callable[[DeliveryError | None], None]) -> None:
        self._require_open()
        committer().submit(self, done)

    def abort(self) -> None:
        if self._state in (_State.OPEN, _State.FAILED):
            self._state = _State.ABORTED
            self._spool.discard(self._cleanup)

    # -- the group commit's steps (``groupcommit``), in the committer thread ---------------

    def stage(self) -> Staged:
        """Write the message to its tmp file, link the other recipients, write the
        envelope lines: what must reach the disk before the renames."""
        message = self._spool.finish()
        for maildir in self._maildirs[1:]:
            self._link(self._tmp(self._maildirs[0]), maildir)
        day = log_name(self._envelope.received_at)
        logs = open_logs()
        log_fds: list[int] = []
        folders: list[str] = []  # the envelope folders that got a new log
        for maildir, recipients in zip(self._maildirs, self._groups.values(), strict=True):
            line = envelope_line(self._envelope, recipients, self._unique)
            fd, created = logs.append(maildir, day, line)
            self._logs.append(log_path(maildir, day))
            log_fds.append(fd)
            if created:
                folders.append(f"{maildir}/{ENVELOPE_DIR}")
        return [message, *self._open, *log_fds], folders

    def publish(self) -> list[str]:
        """Rename every ``tmp/<unique>`` to ``new/<unique>``: the step that delivers."""
        for maildir in self._maildirs:
            new = f"{maildir}/new/{self._unique}"
            os.rename(self._tmp(maildir), new)
            self._renamed.append(new)
        return [f"{maildir}/new" for maildir in self._maildirs]

    def settle(self, error: OSError | None) -> DeliveryError | None:
        """Close the files; on ``error`` remove everything this delivery made."""
        if error is not None:
            return self._failure(error, "committing the message")
        self._close_all()
        self._state = _State.COMMITTED
        return None

    # -- steps -------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise DeliveryError(f"delivery is {self._state.value}")

    def _tmp(self, maildir: str) -> str:
        return f"{maildir}/tmp/{self._unique}"  # noqa: S108 - the Maildir's tmp/, not /tmp

    def _create_message_file(self) -> int:
        """``tmp/<unique>`` in the first Maildir, made on demand (off the event loop)."""
        path = self._tmp(self._maildirs[0])
        try:
            fd = _create(path)
        except FileNotFoundError:  # its first message (or someone removed it): make it
            _ensure_maildir(self._root, self._maildirs[0])
            fd = _create(path)
        self._created.append(path)
        return fd

    def _close_all(self) -> None:
        self._spool.close()
        for fd in self._open:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open.clear()
        logs = open_logs()
        for path in self._logs:
            logs.release(path)
        self._logs.clear()

    def _link(self, source: str, maildir: str) -> None:
        target = self._tmp(maildir)
        try:
            os.link(source, target)
        except FileNotFoundError:
            _ensure_maildir(self._root, maildir)  # a new recipient (or a removed Maildir)
            os.link(source, target)
        except OSError:  # different file system, no hard links, too many links: copy instead
            self._copy(source, maildir)
            return
        self._created.append(target)

    def _copy(self, source: str, maildir: str) -> None:
        target = self._tmp(maildir)
        try:
            fd = _create(target)
        except FileNotFoundError:
            _ensure_maildir(self._root, maildir)
            fd = _create(target)
        self._created.append(target)
        self._open.append(fd)
        with open(source, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
            shutil.copyfileobj(src, dst, _BUFFER)

    def _fail(self, exc: OSError, step: str) -> NoReturn:
        raise self._failure(exc, step) from exc

    def _failure(self, exc: OSError, step: str) -> DeliveryError:
        self._cleanup()
        self._state = _State.FAILED
        reason = exc.strerror or exc.__class__.__name__
        error = DeliveryError(
            f"maildir: {step} failed: {reason}", disk_full=exc.errno in _DISK_FULL
        )
        error.__cause__ = exc
        return error

    def _cleanup(self) -> None:
        self._close_all()
        for path in [*self._renamed, *self._created]:
            # Gone already (renamed away), or a dying disk: best effort either way.
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._renamed.clear()
        self._created.clear()


def _create(path: str) -> int:
    return os.open(path, _CREATE, 0o600)


def _mkdir(path: str | Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


def _mkdirs(path: Path) -> None:
    """``mkdir -p`` with 0700 for every level (pathlib gives parents the umask's mode)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        _mkdirs(path.parent)
        _mkdir(path)


def _ensure_maildir(root: Path, maildir: str) -> None:
    _mkdirs(root)
    _mkdir(maildir)
    for sub in ("tmp", "new", "cur"):
        _mkdir(f"{maildir}/{sub}")


