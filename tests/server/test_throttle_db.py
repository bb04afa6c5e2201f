"""The shared throttle state: two processes' windows in one SQLite file."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from smtpgate.policy.throttle import GOOD_REWRITE_SECONDS, Throttle
from smtpgate.server.throttle_db import SqliteThrottleState
from tests.auth.defaults import throttle_limits


def _fail_from(path: Path, ip: str, times: int) -> None:
    throttle = Throttle(throttle_limits(ip_failure_limit=4), SqliteThrottleState(path))
    for _ in range(times):
        throttle.record_failure(ip, "alice")


def test_failures_recorded_by_two_processes_add_up(tmp_path: Path) -> None:
    path = tmp_path / "throttle.db"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_fail_from, args=(path, "192.0.2.7", 2)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=20)
        assert w.exitcode == 0
    throttle = Throttle(throttle_limits(ip_failure_limit=4), SqliteThrottleState(path))
    assert throttle.ip_blocked("192.0.2.7")  # 2 + 2 failures from two processes
    assert not throttle.ip_blocked("192.0.2.8")


def test_windows_expire_and_known_good_ip_is_remembered(tmp_path: Path) -> None:
    now = [1_000_000.0]
    state = SqliteThrottleState(tmp_path / "throttle.db")
    throttle = Throttle(
        throttle_limits(ip_failure_limit=2, ip_failure_window=60, user_failure_limit=2),
        state,
        clock=lambda: now[0],
    )
    throttle.record_success("198.51.100.1", "alice")
    throttle.record_failure("192.0.2.1", "alice")
    throttle.record_failure("192.0.2.1", "alice")
    assert throttle.ip_blocked("192.0.2.1")
    assert throttle.login_blocked("alice", "192.0.2.9")
    assert not throttle.login_blocked("alice", "198.51.100.1")  # the owner's known-good IP
    now[0] += 61
    assert not throttle.ip_blocked("192.0.2.1")


def test_a_known_good_pair_is_written_once_an_hour_not_per_login(tmp_path: Path) -> None:
    """Every successful AUTH records its (login, address) pair; the shared file gets a row
    per pair and hour, not per login, and the 30-day period still runs from the latest."""
    now = [1_000_000.0]
    path = tmp_path / "throttle.db"
    throttle = Throttle(throttle_limits(), SqliteThrottleState(path), clock=lambda: now[0])

    def rows() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events WHERE tbl = 'good'").fetchone()[0])

    for _ in range(50):
        throttle.record_success("198.51.100.1", "alice")
        now[0] += 10
    assert rows() == 1
    throttle.record_success("198.51.100.2", "alice")  # another address: its own pair
    assert rows() == 2
    now[0] += GOOD_REWRITE_SECONDS
    throttle.record_success("198.51.100.1", "alice")
    assert rows() == 3
    assert throttle.state.last("good", "alice\x00198.51.100.1") == now[0]


def test_unusable_file_fails_open(tmp_path: Path) -> None:
    path = tmp_path / "throttle.db"
    path.write_bytes(b"this is not a database" * 100)
    throttle = Throttle(throttle_limits(ip_failure_limit=1), SqliteThrottleState(path))
    throttle.record_failure("192.0.2.1", None)
    assert not throttle.ip_blocked("192.0.2.1")
