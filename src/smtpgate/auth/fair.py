"""Fair, bounded scheduling of password hashing between client addresses.

Theory of operation
-------------------
Every password check (a real verify, or the dummy verify an unknown user
costs) and every hash the password transition makes runs on ``threads``
worker threads, one per core: an Argon2id verify takes 64 MiB and a core for
about 0.1 s, so it is the one resource a login flood can exhaust.

Jobs wait in one queue per *flow*, the client's address as the throttle keys
it (IPv4 address, IPv6 /64). A thread that frees up takes the next job
round-robin between flows, so an address gets its turn however many
connections it opens, and no flow runs more than ``per_flow`` jobs at once.
Flows are in two classes: those from addresses with recent failed logins
("suspect") are served only when no other flow is waiting. A correct login
from a new address therefore waits for one running job to finish, not for
an attacker's queue.

At most ``max_queued`` jobs wait in all. Past it, one job is refused with
``HashingBusy`` (454 4.7.0): a newcomer from a clean address takes the place
of the newest waiting job of the suspect flow with the longest queue; within
one class the flow with the longest queue gives way; otherwise the newcomer
is refused. A waiter that goes away (its connection closed) leaves the queue;
a job already running finishes on its thread.

All bookkeeping happens on the event loop; only the jobs run in threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")

QUEUED_PER_THREAD = 8  # waiting jobs per thread: about 1 s of Argon2id work per thread


class HashingBusy(Exception):
    """No room in the hashing queue: answer 454 4.7.0, the client may retry later."""


@dataclass(eq=False)
class _Job:
    call: Callable[[], Any]
    future: asyncio.Future[Any]


@dataclass(eq=False)
class _Flow:
    waiting: deque[_Job] = field(default_factory=deque)
    running: int = 0
    suspect: bool = False


class FairHasher:
    def __init__(
        self, threads: int, *, per_flow: int | None = None, max_queued: int | None = None
    ) -> None:
        self.threads = max(1, threads)
        # 1-2 at once per address, and never every thread: one address can't fill them.
        self.per_flow = per_flow if per_flow is not None else max(1, min(2, self.threads - 1))
        self.max_queued = max_queued if max_queued is not None else QUEUED_PER_THREAD * self.threads
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hash")
        self._flows: dict[str, _Flow] = {}
        # Flows with waiting jobs, in round-robin order: [clean, suspect].
        self._rings: tuple[OrderedDict[str, None], ...] = (OrderedDict(), OrderedDict())
        self._queued = 0
        self._running = 0

    @property
    def queued(self) -> int:
        return self._queued

    async def run(self, flow: str, suspect: bool, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a hashing thread when ``flow``'s turn comes.

        ``suspect``: the address has failed logins recently. HashingBusy if refused.
        """
        job = _Job(functools.partial(fn, *args), asyncio.get_running_loop().create_future())
        self._admit(flow, suspect, job)
        self._dispatch()
        try:
            return cast(T, await job.future)
        except asyncio.CancelledError:
            self._withdraw(flow, job)
            raise

    def close(self) -> None:
        for ring in self._rings:
            for key in ring:
                for job in self._flows[key].waiting:
                    job.future.cancel()
            ring.clear()
        self._queued = 0
        self._pool.shutdown(wait=False)

    # -- queueing -------------------------------------------------------------
    def _admit(self, key: str, suspect: bool, job: _Job) -> None:
        flow = self._flows.setdefault(key, _Flow())
        if flow.suspect != suspect:  # what we know of the address changed: move the flow
            self._rings[flow.suspect].pop(key, None)
            flow.suspect = suspect
            if flow.waiting:
                self._rings[suspect][key] = None
        if self._queued >= self.max_queued:
            victim = self._victim(key, suspect)
            if victim is None:
                self._forget_if_idle(key)
                raise HashingBusy
            victim.future.set_exception(HashingBusy())
        flow.waiting.append(job)
        self._queued += 1
        self._rings[suspect].setdefault(key)

    def _victim(self, key: str, suspect: bool) -> _Job | None:
        """Take the job that gives way to a newcomer of ``key``; None: refuse the newcomer."""
        own = len(self._flows[key].waiting) + 1
        for cls in (True, False) if not suspect else (True,):
            ring = self._rings[cls]
            if not ring:
                continue
            longest = max(ring, key=lambda k: len(self._flows[k].waiting))
            waiting = self._flows[longest].waiting
            if cls == suspect and len(waiting) <= own:
                return None  # same class, and the newcomer's flow is as long: it gives way
            self._queued -= 1
            job = waiting.pop()  # the newest: the oldest keeps its place
            if not waiting:
                del ring[longest]
                self._forget_if_idle(longest)
            return job
        return None

    def _withdraw(self, key: str, job: _Job) -> None:
        flow = self._flows.get(key)
        if flow is None or job not in flow.waiting:
            return  # running or already refused: nothing to take back
        flow.waiting.remove(job)
        self._queued -= 1
        if not flow.waiting:
            self._rings[flow.suspect].pop(key, None)
            self._forget_if_idle(key)

    def _forget_if_idle(self, key: str) -> None:
        flow = self._flows.get(key)
        if flow is not None and not flow.waiting and flow.running == 0:
            del self._flows[key]

    # -- running --------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._running < self.threads:
            picked = self._next()
            if picked is None:
                return
            self._start(*picked)

    def _next(self) -> tuple[str, _Flow, _Job] | None:
        """The head job of the first flow in round-robin order that may run one more."""
        for ring in self._rings:
            key = next((k for k in ring if self._flows[k].running < self.per_flow), None)
            if key is None:
                continue
            flow = self._flows[key]
            job = flow.waiting.popleft()
            self._queued -= 1
            if flow.waiting:
                ring.move_to_end(key)  # its next job waits for the others' turns
            else:
                del ring[key]
            return key, flow, job
        return None

    def _start(self, key: str, flow: _Flow, job: _Job) -> None:
        flow.running += 1
        self._running += 1
        try:
            done = asyncio.wrap_future(self._pool.submit(job.call))
        except RuntimeError as exc:  # the pool is shut down: the server is stopping
            done = asyncio.get_running_loop().create_future()
            done.set_exception(exc)
        done.add_done_callback(functools.partial(self._finished, key, flow, job))

    def _finished(self, key: str, flow: _Flow, job: _Job, done: asyncio.Future[Any]) -> None:
        flow.running -= 1
        self._running -= 1
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif (exc := done.exception()) is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        self._forget_if_idle(key)
        self._dispatch()
