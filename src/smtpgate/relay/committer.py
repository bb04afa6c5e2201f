"""Group commit for the queue: messages finishing at about the same time share a flush.

Theory of operation
-------------------
Making one message durable costs an fsync of its file, of its record and of
the ``queue/`` directory after the renames. Fifty connections finishing
messages together would each wait for their own directory fsync in turn.
Instead, each ``QueueWriter.commit`` hands its writer to the one committer
thread of its ``QueueStore`` and waits. The thread takes every commit that is
waiting as one batch and, in this order:

1. flushes: for each message, fsync its file, then write and fsync its
   record (both still in ``tmp/``);
2. renames each message and then its record into ``queue/``;
3. fsyncs ``queue/`` once, covering every rename of the batch;

and only then wakes the waiters, so no message is acknowledged (250) before
the directory flush that covers it. A message whose step fails is left out
of the later steps and its waiter gets the error (451/452, and the writer
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
    def flush_files(self) -> None: ...  # fsync the message, write and fsync the record

    def publish(self) -> None: ...  # rename both into queue/


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
        flushed = _each(batch, lambda w: w.flush_files())
        published = _each(flushed, lambda w: w.publish())
        if not published:
            return
        try:
            self._sync_dir()
        except Exception as exc:  # every waiter must hear of it
            error = exc if isinstance(exc, OSError) else OSError(f"queue commit: {exc!r}")
            for job in published:
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
