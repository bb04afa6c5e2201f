"""FairHasher on real threads: round-robin between addresses, clean before suspect,
a bounded queue that refuses suspect addresses first, per-address concurrency.

Each test first parks a job on every thread (it waits on a threading.Event), so
what queues behind it and in which order it runs is decided by the scheduler
alone; jobs record their label when they run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from smtpgate.auth.fair import FairHasher, HashingBusy


class Bench:
    def __init__(self, hasher: FairHasher) -> None:
        self.hasher = hasher
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.tasks: dict[str, asyncio.Task[str]] = {}

    def job(self, label: str) -> Callable[[], str]:
        def work() -> str:
            self.ran.append(label)
            return label

        return work

    def blocker(self, label: str) -> Callable[[], str]:
        def work() -> str:
            self.gate.wait(30)
            self.ran.append(label)
            return label

        return work

    async def submit(
        self, label: str, flow: str, *, suspect: bool = False, block: bool = False
    ) -> asyncio.Task[str]:
        work = self.blocker(label) if block else self.job(label)
        task = asyncio.ensure_future(self.hasher.run(flow, suspect, work))
        self.tasks[label] = task
        await asyncio.sleep(0)  # let it reach the queue
        return task

    async def release(self) -> None:
        self.gate.set()
        await asyncio.wait_for(
            asyncio.gather(*self.tasks.values(), return_exceptions=True), 30
        )


async def assert_refused(task: asyncio.Task[str]) -> None:
    with pytest.raises(HashingBusy):
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Bench]]:
    made: list[FairHasher] = []

    def build(threads: int = 1, **kwargs: int) -> Bench:
        hasher = FairHasher(threads, **kwargs)
        made.append(hasher)
        return Bench(hasher)

    yield build
    for hasher in made:
        hasher.close()


async def test_round_robin_between_addresses(make: Callable[..., Bench]) -> None:
    bench = make(threads=1)
    await bench.submit("busy", "203.0.113.9", block=True)
    for n in range(3):
        await bench.submit(f"a{n}", "198.51.100.1")
    await bench.submit("b0", "198.51.100.2")
    await bench.submit("c0", "198.51.100.3")
    await bench.release()
    assert bench.ran == ["busy", "a0", "b0", "c0", "a1", "a2"]


async def test_clean_addresses_before_suspect_ones(make: Callable[..., Bench]) -> None:
    bench = make(threads=1)
    await bench.submit("busy", "203.0.113.9", block=True)
    for n in range(4):
        await bench.submit(f"s{n}", f"198.51.100.{n}", suspect=True)
    await bench.submit("clean", "192.0.2.7")
    await bench.release()
    assert bench.ran[:2] == ["busy", "clean"]
    assert sorted(bench.ran[2:]) == ["s0", "s1", "s2", "s3"]


async def test_full_queue_refuses_suspect_addresses_first(make: Callable[..., Bench]) -> None:
    bench = make(threads=1, max_queued=3)
    await bench.submit("busy", "203.0.113.9", block=True)
    await bench.submit("x0", "198.51.100.1", suspect=True)
    await bench.submit("x1", "198.51.100.1", suspect=True)
    await bench.submit("y0", "198.51.100.2", suspect=True)
    await assert_refused(await bench.submit("y1", "198.51.100.2", suspect=True))  # full
    await bench.submit("clean", "192.0.2.7")  # takes the place of x1, the longest flow's newest
    await assert_refused(bench.tasks["x1"])
    assert bench.hasher.queued == 3
    await bench.release()
    assert bench.ran == ["busy", "clean", "x0", "y0"]


async def test_within_a_class_the_longest_queue_gives_way(make: Callable[..., Bench]) -> None:
    bench = make(threads=1, max_queued=3)
    await bench.submit("busy", "203.0.113.9", block=True)
    for n in range(3):
        await bench.submit(f"a{n}", "198.51.100.1")
    await bench.submit("b0", "198.51.100.2")  # full, but a's queue is longer: a2 gives way
    await assert_refused(bench.tasks["a2"])
    await assert_refused(await bench.submit("a3", "198.51.100.1"))  # a is the longest now
    await bench.release()
    assert bench.ran == ["busy", "a0", "b0", "a1"]


async def test_one_address_never_takes_every_thread(make: Callable[..., Bench]) -> None:
    bench = make(threads=2)  # per_flow defaults to 1 with 2 threads
    await bench.submit("a0", "198.51.100.1", block=True)
    await bench.submit("a1", "198.51.100.1", block=True)
    b = await bench.submit("b0", "198.51.100.2")
    assert await asyncio.wait_for(b, 30) == "b0"  # the second thread was kept for b
    assert bench.ran == ["b0"] and not bench.tasks["a1"].done()
    await bench.release()
    assert bench.ran[1:] == ["a0", "a1"]


async def test_a_waiter_that_goes_away_leaves_the_queue(make: Callable[..., Bench]) -> None:
    bench = make(threads=1)
    await bench.submit("busy", "203.0.113.9", block=True)
    gone = await bench.submit("gone", "198.51.100.1")
    await bench.submit("stays", "198.51.100.2")
    gone.cancel()
    await asyncio.sleep(0)
    assert bench.hasher.queued == 1
    del bench.tasks["gone"]
    await bench.release()
    assert bench.ran == ["busy", "stays"]


async def test_errors_reach_the_caller(make: Callable[..., Bench]) -> None:
    bench = make(threads=1)

    def broken() -> None:
        raise ValueError("bad hash")

    with pytest.raises(ValueError, match="bad hash"):
        await bench.hasher.run("198.51.100.1", False, broken)
    assert await bench.hasher.run("198.51.100.1", False, lambda: 7) == 7
