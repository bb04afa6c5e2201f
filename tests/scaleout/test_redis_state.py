"""The Redis state (smtpgate/state/) against a real redis-server, two "instances" in
one test process: each is its own RedisLink and objects, as in two processes."""

from __future__ import annotations

import logging
import time

import pytest

from smtpgate.policy.throttle import MemoryThrottleState
from smtpgate.server.admission import LocalAdmission
from smtpgate.server.senders import MemoryQuota
from smtpgate.state import SharedState, ready
from smtpgate.state.admission import PER_IP, RedisAdmission, conn_key
from smtpgate.state.link import RETRY, RedisLink
from smtpgate.state.quota import RedisQuota, quota_key
from smtpgate.state.throttle import RedisThrottleState, window_key
from tests.scaleout.engines import RedisServer, wait_until

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


def throttle(url: str, on_failure: str = "open") -> RedisThrottleState:
    return RedisThrottleState(RedisLink(url, on_failure=on_failure), MemoryThrottleState(), 10)


def admission(url: str, per_ip: int = 2, ttl: int = 30, on_failure: str = "open") -> RedisAdmission:
    link = RedisLink(url, on_failure=on_failure)
    return RedisAdmission(link, LocalAdmission(100, 100), per_ip, ttl=ttl)


def test_failure_windows_are_shared(redis_url: str) -> None:
    one, two = throttle(redis_url), throttle(redis_url)
    now = time.time()
    for at in (now - 100, now - 1, now - 1):  # two in the same instant both count
        one.add("ip", "192.0.2.1", at)
    assert two.count("ip", "192.0.2.1", now - 50) == 2
    assert two.count("ip", "192.0.2.1", now - 200) == 3
    assert two.count("login", "192.0.2.1", now - 200) == 0
    assert two.last("ip", "192.0.2.1") == pytest.approx(now - 1)
    assert two.last("good", "alice\0192.0.2.1") is None


def test_unblock_clears_the_shared_window(redis_url: str) -> None:
    """The admin page's unblock: every instance sees the address clear at once; the
    list of busy addresses is the instance's own (Redis keys are digests)."""
    one, two = throttle(redis_url), throttle(redis_url)
    now = time.time()
    for _ in range(3):
        one.add("ip", "192.0.2.9", now)
    assert one.busiest("ip", now - 10, 2) == [("192.0.2.9", 3)]
    assert two.busiest("ip", now - 10, 2) == []  # two recorded nothing itself
    two.clear("ip", "192.0.2.9")
    assert one.count("ip", "192.0.2.9", now - 10) == 0


def test_windows_hold_no_plaintext_and_expire(redis_url: str) -> None:
    state = throttle(redis_url)
    state.add("login", "alice@example.com", time.time())
    client = state._link.client
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.keys("*")]
    assert keys == [window_key("login", "alice@example.com")]
    assert "alice" not in keys[0]
    assert 0 < client.ttl(keys[0]) <= 86400


def test_per_address_leases_hold_across_instances(redis_url: str) -> None:
    a, b = admission(redis_url), admission(redis_url)
    assert a.admit("192.0.2.7") is None
    assert b.admit("192.0.2.7") is None
    assert a.admit("192.0.2.7") == PER_IP
    assert b.admit("192.0.2.7") == PER_IP
    assert b.admit("192.0.2.8") is None  # another address has its own count
    a.release("192.0.2.7")
    assert b.admit("192.0.2.7") is None


def test_a_dead_instances_leases_lapse(redis_url: str) -> None:
    dead, live = admission(redis_url, ttl=1), admission(redis_url, ttl=1)
    live.start()
    try:
        assert dead.admit("192.0.2.9") is None
        assert dead.admit("192.0.2.9") is None
        assert live.admit("192.0.2.9") == PER_IP
        # `dead` never beats: its alive key expires after its TTL, and its slots with it.
        wait_until(lambda: live.admit("192.0.2.9") is None, "dead instance's slots freed", 5)
        assert live.admit("192.0.2.9") is None
        assert live.admit("192.0.2.9") == PER_IP
    finally:
        live.close()


def test_heartbeat_rewrites_counts_after_redis_forgot_them(redis_url: str) -> None:
    a, b = admission(redis_url), admission(redis_url)
    assert a.admit("192.0.2.3") is None
    assert a.admit("192.0.2.3") is None
    a._link.client.flushall()  # what a Redis restart without persistence does
    a.heartbeat()
    assert b.admit("192.0.2.3") == PER_IP
    a.close()  # a clean stop gives the leases back at once
    assert a._link.client.hgetall(conn_key("192.0.2.3")) == {}
    assert b.admit("192.0.2.3") is None


def test_open_falls_back_to_this_instance(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "smtpgate.state")
    state = throttle(DOWN)
    now = time.time()
    for _ in range(3):
        state.add("ip", "192.0.2.1", now)
    assert state.count("ip", "192.0.2.1", now - 1) == 3  # counted per instance
    gate = admission(DOWN, per_ip=1)
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") is None  # only the inner limits apply now
    assert caplog.text.count("unreachable") == 2  # once per link, not per call


def test_closed_refuses_logins_not_connections() -> None:
    state = throttle(DOWN, "closed")
    assert state.count("ip", "192.0.2.1", 0) == 10  # the limit: AUTH is answered 454
    assert state.last("good", "x") is None
    gate = admission(DOWN, per_ip=1, on_failure="closed")
    assert gate.admit("192.0.2.1") is None  # connections: this instance's limits still hold
    assert gate.admit("192.0.2.1") is None


def test_link_reconnects_by_itself(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "smtpgate.state")
    state = throttle(redis_url, "closed")
    assert state.count("ip", "k", 0) == 0
    redis_server.stop()
    assert state.count("ip", "k", 0) == 10  # down: closed reads as the limit
    assert state.count("ip", "k", 0) == 10
    redis_server.start()
    time.sleep(RETRY + 0.1)
    assert state.count("ip", "k", 0) == 0  # a fresh connection: up again
    assert caplog.text.count("unreachable") == 1
    assert caplog.text.count("reachable again") == 1


async def test_ready_reports_whether_redis_answers(redis_url: str) -> None:
    def shared(url: str) -> SharedState:
        link = RedisLink(url)
        return SharedState(link, RedisThrottleState(link, MemoryThrottleState(), 1),
                           RedisAdmission(link, LocalAdmission(1, 1), 1))

    assert await ready(None) == {"state": True}
    assert await ready(shared(redis_url)) == {"state": True}
    assert await ready(shared(DOWN)) == {"state": False}


class Unavailable(Exception):
    pass


def quota(url: str, on_failure: str = "open") -> RedisQuota:
    link = RedisLink(url, on_failure=on_failure)
    return RedisQuota(link, MemoryQuota(), Unavailable)


def test_daily_quota_is_shared_and_exact(redis_url: str) -> None:
    one, two = quota(redis_url), quota(redis_url)
    taken = [q.take("printer", "2026-11-30", 3) for q in (one, two, one, two, one)]
    assert taken == [True, True, True, False, False]
    assert two.count("printer", "2026-11-30") == 3
    assert one.take("printer", "2026-12-01", 3)  # a new day, a new count
    assert not one.take("scanner", "2026-11-30", 0)
    assert 0 < one._link.client.ttl(quota_key("printer", "2026-11-30")) <= 2 * 86400


def test_daily_quota_without_redis() -> None:
    open_ = quota(DOWN)
    day = "2026-11-30"
    assert [open_.take("printer", day, 1), open_.take("printer", day, 1)] == [True, False]
    with pytest.raises(Unavailable):
        quota(DOWN, "closed").take("printer", day, 1)
