"""The overview's bars: stacked per hour, scaled to the busiest hour; and the throttle's
view of blocks that the overview and blocks page list."""

from __future__ import annotations

from smtpgate.admin.charts import HEIGHT, chart
from smtpgate.admin.events import Hour
from smtpgate.policy.throttle import Throttle, ThrottleLimits


def test_stacked_bars_scale_to_the_busiest_hour() -> None:
    hours = [Hour(3600.0 * i, 0, 0, 0) for i in range(24)]
    hours[5] = Hour(3600.0 * 5, 0, 3, 1)
    hours[23] = Hour(3600.0 * 23, 0, 1, 1)
    drawn = chart("AUTH", hours, (("auth_ok", "ok"), ("auth_failed", "fail")))
    assert drawn.peak == 4 and drawn.total == 6
    tall = [b for b in drawn.bars if b.x < drawn.width * 6 / 24 and b.x > drawn.width * 5 / 24]
    assert [(b.css, b.height) for b in tall] == [("ok", HEIGHT * 3 / 4), ("fail", HEIGHT / 4)]
    assert tall[1].y + tall[1].height == tall[0].y  # failures sit on the successes
    assert tall[0].y + tall[0].height == HEIGHT
    assert "05:00 UTC: 3 auth ok" in tall[0].title
    assert len(drawn.labels) == 8


def test_empty_day_draws_no_bars() -> None:
    drawn = chart("Messages", [Hour(0.0, 0, 0, 0)] * 24, (("messages", "msg"),))
    assert drawn.bars == () and drawn.total == 0


def test_blocked_and_unblocked_by_key() -> None:
    now = [1000.0]
    throttle = Throttle(ThrottleLimits(2, 300.0, 3, 900.0), clock=lambda: now[0])
    for _ in range(2):
        throttle.record_failure("2001:db8::1", "carol")
        throttle.record_failure("2001:db8::2", "carol")  # the same /64
    throttle.record_failure("192.0.2.9", "dave")
    assert throttle.blocked_ips() == [("2001:db8::/64", 4)]
    assert throttle.blocked_logins() == [("carol", 4)]
    throttle.unblock_ip("2001:db8::/64")  # the key as the page lists it
    assert throttle.blocked_ips() == [] and not throttle.ip_blocked("2001:db8::7")
    throttle.unblock_login("carol")
    assert throttle.blocked_logins() == []
    for _ in range(2):
        throttle.record_failure("192.0.2.9", None)
    throttle.unblock_ip("192.0.2.9")  # a plain address works too
    assert not throttle.ip_blocked("192.0.2.9")
    now[0] += 301
    assert throttle.blocked_ips() == []
