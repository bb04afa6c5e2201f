"""The AUTH event log: what real SMTP AUTHs and messages leave in it, its filters,
its 24 hourly buckets and its bound."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest

from smtpgate.admin import events as events_module
from smtpgate.admin.events import EventLog
from smtpgate.auth.values import AuthEvent
from tests.admin.conftest import Admin, log_in
from tests.admin.test_throttle import smtp_login
from tests.e2e.conftest import PASSWORD


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_filters_and_order(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    log = EventLog(tmp_path / "events.db", clock)
    log.auth(AuthEvent("192.0.2.1", "alice", "PLAIN", "ok"))
    clock.now += 1
    log.auth(AuthEvent("192.0.2.10", "bob_1", "LOGIN", "invalid"))
    clock.now += 1
    log.auth(AuthEvent("198.51.100.7", "", "PLAIN", "bad-base64"))
    assert [e.login for e in log.recent()] == ["", "bob_1", "alice"]  # newest first
    assert [e.ip for e in log.recent(ip="192.0.2.1")] == ["192.0.2.10", "192.0.2.1"]
    assert [e.login for e in log.recent(login="b_")] == ["bob_1"]  # "_" is literal
    assert [e.login for e in log.recent(login="%")] == []
    assert [e.outcome for e in log.recent(outcome="failed")] == ["bad-base64", "invalid"]
    assert [e.outcome for e in log.recent(outcome="ok")] == ["ok"]
    clock.now += 86400 + 10
    assert log.recent() == []  # older than the overview's 24 hours
    log.close()


def test_hours(tmp_path: Path) -> None:
    clock = Clock(7200.0 * 100 + 30)
    log = EventLog(tmp_path / "events.db", clock)
    log.message()
    log.auth(AuthEvent("192.0.2.1", "a", "PLAIN", "ok"))
    log.auth(AuthEvent("192.0.2.1", "a", "PLAIN", "invalid"))
    clock.now -= 3 * 3600  # three hours earlier
    log.message()
    log.message()
    clock.now += 3 * 3600
    hours = log.hours()
    assert len(hours) == 24 and hours[-1].start <= clock.now < hours[-1].start + 3600
    assert (hours[-1].messages, hours[-1].auth_ok, hours[-1].auth_failed) == (1, 1, 1)
    assert hours[-4].messages == 2
    assert sum(h.messages for h in hours) == 3
    log.close()


def test_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "MAX_ROWS", 50)
    monkeypatch.setattr(events_module, "_PRUNE_EVERY", 10)
    log = EventLog(tmp_path / "events.db")
    for n in range(300):
        log.auth(AuthEvent("192.0.2.1", f"u{n}", "PLAIN", "invalid"))
    rows = log.recent()
    assert len(rows) <= 60 and rows[0].login == "u299"
    log.close()


def test_private_file(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "sub" / "events.db")
    log.message()
    assert (tmp_path / "sub" / "events.db").stat().st_mode & 0o777 == 0o600
    log.close()


async def test_smtp_auth_and_messages_reach_the_pages(admin: Admin) -> None:
    assert not await smtp_login(admin, "wrong password")
    assert await smtp_login(admin, PASSWORD)
    await aiosmtplib.send(
        b"Subject: hi\r\n\r\nhello\r\n", sender="alice@example.test",
        recipients=["bob@example.test"], hostname="127.0.0.1", port=admin.smtp_port,
        username="alice", password=PASSWORD, start_tls=False, use_tls=False,
    )
    async with admin.client() as client:
        await log_in(client)
        async with client.get("/events", params={"outcome": "failed"}) as page:
            text = await page.text()
        assert "invalid" in text and "alice" in text and 'class="outcome">ok<' not in text
        async with client.get("/events", params={"outcome": "ok"}) as page:
            text = await page.text()
        assert 'class="outcome">ok<' in text and 'class="outcome">invalid' not in text
        async with client.get("/") as page:
            text = await page.text()
        assert "1 in 24 h" in text  # the message
        assert "3 in 24 h" in text  # AUTH: one failure, two successes (PLAIN first)
    assert "wrong password" not in (admin.config.data_dir / "admin-events.db").read_bytes().decode(
        "latin-1"
    )
