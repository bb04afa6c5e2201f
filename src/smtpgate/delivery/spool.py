"""A message's bytes on their way to its file: in memory while small, in the file once large.

Theory of operation
-------------------
Opening a file means creating an inode, a blocking call the event loop must
not make, and handing every message to a worker thread just to open its
file cost more CPU than the rest of its delivery. So a ``Spool`` keeps the
message in memory (``write``, on the event loop, only appends to a list)
and the group commit's ``stage`` creates the file and writes it all out
(``finish``, in the committer thread): a small message costs no thread hop
of its own.

A message that grows past ``SPILL`` octets goes to its file while it
arrives, so memory per connection stays bounded: the file is created in a
worker thread (``open_async``) while the chunks keep collecting in memory;
the first ``write`` after the open has finished writes them out, and every
later one appends to the file directly (page-cache writes, as before).
A message that never spilled is written with ``os.write`` on the bare
descriptor: no file object, whose making costs an ``fstat`` and an ``lseek``.
``finish`` waits for an open still running. ``discard`` closes the file,
and when an open is still running, closes what it opens once it is done,
then calls its ``then`` (the owner removes its files there).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from smtpgate.delivery.groupcommit import write_all

SPILL = 1024 * 1024  # octets held in memory before the message goes to its file
_BUFFER = 64 * 1024

_opener: tuple[int, ThreadPoolExecutor] | None = None
_opener_lock = threading.Lock()


def open_async(create: Callable[[], int]) -> Future[int]:
    """Run ``create`` (it returns a new descriptor) in this process's opener threads."""
    global _opener  # noqa: PLW0603 - one pool per process (made again after a fork)
    pid = os.getpid()
    with _opener_lock:
        if _opener is None or _opener[0] != pid:
            _opener = (pid, ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-open"))
        pool = _opener[1]
    return pool.submit(create)


class Spool:
    """See the module docstring. ``create`` makes the file and returns its descriptor;
    with ``keep``, ``finish`` leaves a message that never spilled in ``whole`` (the
    relay hands it to its deliverer instead of reading the file back)."""

    def __init__(self, create: Callable[[], int], *, keep: bool = False) -> None:
        self._create = create
        self._keep = keep
        self._chunks: list[bytes] = []
        self._held = 0  # octets in _chunks
        self._opening: Future[int] | None = None
        self._file: BinaryIO | None = None  # the spill file, while the message arrives
        self._fd: int | None = None  # after finish: the descriptor holding the message
        self.whole: bytes | None = None  # after finish: the message, if it never spilled

    def write(self, data: bytes) -> None:
        """Append (on the event loop). ``OSError`` if the spill file failed."""
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        self._held += len(data)
        if self._opening is None:
            if self._held > SPILL:
                self._opening = open_async(self._create)
        elif self._opening.done():
            self._take_file()

    def finish(self) -> int:
        """The file's descriptor, holding every octet written (blocking: the committer
        thread)."""
        if self._fd is not None:
            return self._fd
        if self._file is None and self._opening is not None:
            self._take_file()  # spilled, and no write came after the open finished
        if self._file is not None:  # spilled: the rest is in the file object's buffer
            self._file.flush()
            self._fd = self._file.fileno()
            return self._fd
        self._fd = fd = self._create()
        chunks, self._chunks, self._held = self._chunks, [], 0
        joined = b"".join(chunks)
        write_all(fd, joined)
        if self._keep:
            self.whole = joined
        return fd

    def close(self) -> None:
        """Close the file, if open (its data is written already, or being thrown away).
        Also lets go of ``create``: an owner's bound method would make a reference cycle
        that only the cyclic collector frees (one per message, which it then had to walk)."""
        self._create = _closed
        handle, self._file = self._file, None
        fd, self._fd = self._fd, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()  # closes fd too
        elif fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self, then: Callable[[], None]) -> None:
        """Forget the message: close the file (now, or once its open finishes), then
        ``then()`` (in the opener thread if the open was still running)."""
        self._chunks.clear()
        self.whole = None
        opening, self._opening = self._opening, None
        if self._file is None and opening is not None and not opening.done():
            opening.add_done_callback(lambda done: _close_opened(done, then))
            return
        if self._file is None and opening is not None:
            _close_opened(opening, lambda: None)
        self.close()
        then()

    def _take_file(self) -> None:
        """The open has finished: take its descriptor (or raise its ``OSError``)."""
        assert self._opening is not None
        self._wrap(self._opening.result())

    def _wrap(self, fd: int) -> None:
        """Write through ``fd`` from now on, starting with what was held in memory."""
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)
        chunks, self._chunks, self._held = self._chunks, [], 0
        self._file.write(b"".join(chunks))


def _closed() -> int:
    raise OSError("the spool is closed")


def _close_opened(done: Future[int], then: Callable[[], None]) -> None:
    if done.exception() is None:
        with contextlib.suppress(OSError):
            os.close(done.result())
    then()
