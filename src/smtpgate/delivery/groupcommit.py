"""Group commit: messages that finish at about the same time share their flushes.

Theory of operation
-------------------
Making a message durable takes three steps in order: its files reach the
disk (the flush), they are renamed into place (the publish), and the
directories they were renamed into reach the disk (the directory flush).
Only then may the server answer 250. Paying those flushes once per message
is what made durable delivery slow; here they are paid once per batch.

Each process has one ``Committer`` thread (``committer()``, made on first
use, made again after a fork). A delivery hands it a ``Durable`` job
(``submit``, with a callback, from the event loop; or ``commit``, which
waits, from any other thread). The thread takes every job waiting as one
batch (at most ``MAX_BATCH``) and

1. ``stage``s each job: it writes what it still buffers and names the file
   descriptors and directories that must reach the disk before it publishes;
2. flushes them all in one pass (``flush``);
3. ``publish``es each job: its renames; each names the directories it
   renamed into;
4. flushes those directories in one pass;
5. ``settle``s each job (closes its files; undoes everything on error) and
   calls its callback.

No job's callback runs before the flushes that cover it, so no message is
acknowledged early. A job whose own step fails drops out of the batch with
its error; a failed flush fails every job it covered. While one batch is on
the disk the next one gathers, so batches grow with the load and a lone
message waits for nobody.

One flush pass is ``syncfs(2)`` when it covers two or more things and the
platform has it (Linux): one call makes every file and directory of that
file system durable (since Linux 5.8 it also reports the write-back errors
of the file system), which costs less than one ``fsync`` each and asks the
journal for one commit. On one thing, or without ``syncfs``, it is ``fsync``
of each. Either way the order above holds, which ``tests/delivery`` and
``tests/relay`` check under strace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from smtpgate.delivery.base import DeliveryError

__all__ = ["MAX_BATCH", "Committer", "Durable", "Staged", "committer", "fsync_dir", "write_all"]

MAX_BATCH = 256
log = logging.getLogger("smtpgate.delivery")

Staged = tuple[list[int], list[str]]  # descriptors and directories to flush before publishing
T = TypeVar("T")
Done = Callable[[DeliveryError | None], None]


class Durable(Protocol):
    """One message's part in a batch (see the module docstring)."""

    def stage(self) -> Staged: ...

    def publish(self) -> list[str]: ...  # the directories renamed into

    def settle(self, error: OSError | None) -> DeliveryError | None: ...


class _Job:
    __slots__ = ("done", "durable", "error")

    def __init__(self, durable: Durable, done: Done) -> None:
        self.durable = durable
        self.done = done
        self.error: OSError | None = None


class Committer:
    """One thread committing batches of ``Durable`` jobs (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._syncfs = _load_syncfs()

    def submit(self, durable: Durable, done: Done) -> None:
        """Commit ``durable`` in the next batch; ``done(error)`` runs in the committer thread."""
        self._ensure_thread()
        self._jobs.put(_Job(durable, done))

    def commit(self, durable: Durable) -> None:
        """Commit and wait (not on the event loop); raise the ``DeliveryError``, if any."""
        finished = threading.Event()
        outcome: list[DeliveryError | None] = []

        def done(error: DeliveryError | None) -> None:
            outcome.append(error)
            finished.set()

        self.submit(durable, done)
        finished.wait()
        if outcome[0] is not None:
            raise outcome[0]

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit_batch(batch)
            except Exception as exc:  # a bug: fail this batch, keep the thread for the next
                log.exception("group commit: a batch failed")
                for job in batch:
                    job.error = job.error or OSError(f"group commit: {exc!r}")
                    _settle(job)
            batch.clear()  # not kept while the next job is awaited: their messages are done

    def _commit_batch(self, batch: list[_Job]) -> None:
        staged = _each(batch, lambda d: d.stage())
        fds = [fd for _, (files, _) in staged for fd in files]
        dirs = [d for _, (_, folders) in staged for d in folders]
        ready = self._all_or_fail([job for job, _ in staged], lambda: self.flush(fds, dirs))
        published = _each(ready, lambda d: d.publish())
        renamed_into = {d for _, into in published for d in into}
        self._all_or_fail([job for job, _ in published],
                          lambda: self.flush([], sorted(renamed_into)))
        for job in batch:
            _settle(job)

    def _all_or_fail(self, jobs: list[_Job], flush: Callable[[], None]) -> list[_Job]:
        """One flush for all ``jobs``; if it fails, each of them gets the error."""
        if not jobs:
            return jobs
        try:
            flush()
        except OSError as exc:
            for job in jobs:
                job.error = exc
            return []
        return jobs

    def flush(self, fds: list[int], dirs: Iterable[str]) -> None:
        """Make the files and directories durable: ``syncfs`` once per file system when
        that covers two or more of them, else ``fsync`` each."""
        fds = list(dict.fromkeys(fds))  # a log shared by the batch's messages: once
        dirs = list(dirs)
        if self._syncfs is None or len(fds) + len(dirs) < 2:
            for fd in fds:
                os.fsync(fd)
            for path in dirs:
                fsync_dir(path)
            return
        with contextlib.ExitStack() as stack:
            one_per_fs: dict[int, int] = {}
            for fd in fds:
                one_per_fs.setdefault(os.fstat(fd).st_dev, fd)
            for path in dirs:
                device = os.stat(path).st_dev
                if device not in one_per_fs:
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    stack.callback(os.close, fd)
                    one_per_fs[device] = fd
            for fd in one_per_fs.values():
                self._syncfs(fd)


def _each(jobs: list[_Job], step: Callable[[Durable], T]) -> list[tuple[_Job, T]]:
    """Run ``step`` for every job still without an error; the ones it succeeded for."""
    ok: list[tuple[_Job, T]] = []
    for job in jobs:
        if job.error is not None:
            continue
        try:
            result = step(job.durable)
        except OSError as exc:
            job.error = exc
            continue
        except Exception as exc:  # a bug must not pass as durable
            log.exception("group commit: a step failed")
            job.error = OSError(f"group commit: {exc!r}")
            continue
        ok.append((job, result))
    return ok


def _settle(job: _Job) -> None:
    try:
        outcome = job.durable.settle(job.error)
    except Exception as exc:  # settle cleans up; its failure must still be answered
        log.exception("group commit: settling a message failed")
        outcome = DeliveryError(f"group commit: {exc!r}")
    try:
        job.done(outcome)
    except Exception:
        log.exception("group commit: a completion callback failed")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every octet is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(fd)`` from the C library (Linux), raising ``OSError``; None elsewhere."""
    try:
        import ctypes  # lazily: only a process that commits mail pays for it
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (ImportError, OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))

    return syncfs


_committer: tuple[int, Committer] | None = None
_committer_lock = threading.Lock()


def committer() -> Committer:
    """This process's committer (a forked child gets its own: threads do not survive fork).
    Called for every message: the usual case takes no lock."""
    global _committer  # noqa: PLW0603 - one per process, by design
    current = _committer
    if current is not None and current[0] == _pid:
        return current[1]
    with _committer_lock:
        if _committer is None or _committer[0] != _pid:
            _committer = (_pid, Committer())
        return _committer[1]


def _forked() -> None:
    global _pid, _committer_lock  # noqa: PLW0603 - per process, by design
    _pid = os.getpid()  # so committer() need not ask for it every message
    _committer_lock = threading.Lock()  # a parent's thread may have held it at the fork


def process_id() -> int:
    """This process's id without a system call (kept, and read again after a fork)."""
    return _pid


_pid = os.getpid()
os.register_at_fork(after_in_child=_forked)
