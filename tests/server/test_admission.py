"""The connection limits: in memory, and in the table shared by forked workers."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from smtpgate.server.admission import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    ConnectionTable,
    LocalAdmission,
)


def test_local_admission_counts_per_ip_and_in_total() -> None:
    admission = LocalAdmission(max_connections=3, max_per_ip=2)
    assert [admission.admit("192.0.2.1") for _ in range(3)] == [None, None,
                                                                 MAX_CONNECTIONS_PER_IP]
    assert admission.admit("192.0.2.2") is None
    assert admission.admit("192.0.2.3") == MAX_CONNECTIONS
    admission.release("192.0.2.1")
    admission.release("192.0.2.9")  # never admitted: nothing to free
    assert admission.admit("192.0.2.3") is None


def _take(table: ConnectionTable, index: int, attempts: int, start: Any, taken: Any) -> None:
    admission = table.worker(index)
    start.wait()
    taken[index] = sum(admission.admit("2001:db8::7") is None for _ in range(attempts))
    os._exit(0)  # keep the slots: the process "dies" holding them


def test_forked_workers_racing_are_counted_exactly_and_a_dead_ones_slots_freed() -> None:
    workers, per_ip = 4, 30
    table = ConnectionTable(workers, max_connections=200, max_per_ip=per_ip)
    ctx = multiprocessing.get_context("fork")
    start, shared = ctx.Barrier(workers), ctx.Array("i", workers)
    procs = [ctx.Process(target=_take, args=(table, i, 50, start, shared))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(20)
        assert proc.exitcode == 0
    taken = [shared[i] for i in range(workers)]
    assert sum(taken) == per_ip and table.live() == per_ip
    survivor = table.worker(0)
    assert survivor.admit("2001:db8::7") == MAX_CONNECTIONS_PER_IP
    busiest = max(range(workers), key=lambda i: taken[i])
    table.forget_worker(busiest)
    assert table.live() == per_ip - taken[busiest]
    assert [survivor.admit("2001:db8::7") for _ in range(taken[busiest])] == [None] * taken[
        busiest]
    assert survivor.admit("2001:db8::7") == MAX_CONNECTIONS_PER_IP
    assert survivor.admit("2001:db8::8") is None  # another address has its own count
    table.close()


def test_total_limit_across_workers() -> None:
    table = ConnectionTable(2, max_connections=3, max_per_ip=3)
    first, second = table.worker(0), table.worker(1)
    assert first.admit("192.0.2.1") is None and second.admit("192.0.2.2") is None
    assert second.admit("192.0.2.3") is None
    assert first.admit("192.0.2.4") == MAX_CONNECTIONS
    second.release("192.0.2.3")
    assert first.admit("192.0.2.4") is None
    table.close()


def test_a_second_view_of_one_worker_index_takes_only_empty_slots() -> None:
    # The racing test above keeps worker 0's view in the parent while a dead child 0's
    # slots are still in the table: the view must not overwrite them and under-count.
    table = ConnectionTable(2, max_connections=10, max_per_ip=2)
    assert table.worker(0).admit("192.0.2.1") is None
    second = table.worker(0)
    assert second.admit("192.0.2.1") is None
    assert second.admit("192.0.2.1") == MAX_CONNECTIONS_PER_IP
    assert table.live() == 2
    table.close()


def test_slots_stay_packed_and_counting_reads_only_up_to_the_mark() -> None:
    """A worker takes its lowest free slot and keeps a mark one past its highest in use;
    counting an address reads up to the marks only, and still finds every slot."""
    table = ConnectionTable(2, max_connections=50, max_per_ip=2)
    view = table.worker(1)
    ips = [f"192.0.2.{n}" for n in range(6)]
    for ip in ips:
        assert view.admit(ip) is None
    assert table._marks() == [0, 6]
    view.release(ips[2])  # a hole below the top: the mark stays
    assert table._marks() == [0, 6]
    assert view.admit("198.51.100.1") is None  # takes the hole, the lowest free slot
    assert table._marks() == [0, 6]
    view.release(ips[5])
    view.release(ips[4])
    assert table._marks() == [0, 4]  # the top emptied: the mark comes down past both
    assert view.admit(ips[3]) is None  # the top slot in use is still counted ...
    assert view.admit(ips[3]) == MAX_CONNECTIONS_PER_IP  # ... so the limit holds
    table.forget_worker(1)
    assert table._marks() == [0, 0] and table.live() == 0
    table.close()
