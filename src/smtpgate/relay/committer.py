"""Group commit for the queue: messages finishing at about the same time share a flush.

Theory of operation
-------------------
Making one message durable takes a flush of its file and of its record, the
renames into ``queue/``, and a flush of the ``queue/`` directory. Each
``QueueWriter.commit`` flushes its own two files in its own (server worker)
thread, so the flushes of messages finishing together run side by side and
the kernel joins them in one journal commit; it then hands the writer to the
one committer thread of its ``QueueStore`` and waits. The thread takes every
commit that is waiting as one batch and

1. renames each message and then its record into ``queue/``;
2. fsyncs ``queue/`` once, covering every rename of the batch;

and only then wakes the waiters, so no message is acknowledged (250) before
the directory flush that covers it. A message whose rename fails is left out
of the directory flush and its waiter gets the error (451/452, and the writer
removes what it wrote); a failed directory fsync fails the whole batch.
While a batch is on disk, the next one gathers in the queue, so batches grow
with the load and a lone message waits for nobody. A batch takes at most
``MAX_BATCH`` commits, so its work per pass is bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol

MAX_BATCH = 256


class Committable(Protocol):
    def publish(self) -> None: ...  # rename the flushed message and record into queue/


class _Job:
    __slots__ = ("done", "error", "writer")

    def __init__(self, writer: Committable) -> None:
        self.writer = writer
        self.done = threading.Event()
        self.error: OSError | None = None


class Committer:
    """One thread that commits batches for one queue directory (see the module docstring)."""

    def __init__(self, sync_dir: Callable[[], None]) -> None:
        self._sync_dir = sync_dir
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def commit(self, writer: Committable) -> None:
        """Return once ``writer`` is durable; raise the ``OSError`` of its batch if not."""
        job = _Job(writer)
        self._ensure_thread()
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="queue-committer",
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
            finally:
                for job in batch:
                    job.done.set()

    def _commit_batch(self, batch: list[_Job]) -> None:
        published = _each(batch, lambda w: w.publish())
        _all_or_fail(published, self._sync_dir)


def _all_or_fail(jobs: list[_Job], flush: Callable[[], None]) -> None:
    """One flush for all ``jobs``; if it fails, each of them gets the error."""
    if not jobs:
        return
    try:
        flush()
    except Exception as exc:  # every waiter must hear of it
        error = exc if isinstance(exc, OSError) else OSError(f"queue commit: {exc!r}")
        for job in jobs:
            job.error = error


def _each(jobs: list[_Job], step: Callable[[Committable], None]) -> list[_Job]:
    """Run ``step`` for every job; the ones it succeeded for."""
    ok: list[_Job] = []
    for job in jobs:
        try:
            step(job.writer)
            ok.append(job)
        except OSError as exc:
            job.error = exc
        except Exception as exc:  # a bug must not pass as durable
            job.error = OSError(f"queue commit: {exc!r}")
    return ok
