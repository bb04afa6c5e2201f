"""Failed admin logins count in the same per-IP window as SMTP AUTH failures
([auth] ip_failure_limit); a blocked address is unblocked from the blocks page."""

from __future__ import annotations

import aiosmtplib
import pytest

from smtpgate.policy.throttle import MemoryThrottleState, ThrottleState
from smtpgate.server.throttle_db import SqliteThrottleState
from tests.admin.conftest import ADMIN_PASSWORD, Admin, csrf_of, log_in


async def smtp_login(admin: Admin, password: str, user: str = "alice") -> bool:
    """One AUTH PLAIN on a new connection; True if it succeeded."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=admin.smtp_port, start_tls=False, use_tls=False,
        timeout=30,
    )
    await client.connect()
    await client.ehlo()
    try:
        await client.auth_plain(user, password)  # one AUTH, one mechanism
        return True
    except aiosmtplib.SMTPAuthenticationError:
        return False
    finally:
        client.close()


async def test_admin_login_failures_block_the_address(admin: Admin) -> None:
    async with admin.client() as client:
        for _ in range(3):  # ip_failure_limit = 3
            assert (await log_in(client, password="guess")).status == 401
        refused = await log_in(client, password=ADMIN_PASSWORD)
        assert refused.status == 429  # not even checked
        assert "smtpgate_admin" not in refused.cookies
    # The same window as SMTP AUTH: the address is blocked there too.
    assert not await smtp_login(admin, "correct horse battery staple")


async def test_smtp_failures_block_admin_logins_until_unblocked(admin: Admin) -> None:
    async with admin.client() as operator:
        assert (await log_in(operator)).status == 303  # logged in before the attack
        for _ in range(3):
            assert not await smtp_login(admin, "wrong")
        async with admin.client() as late:
            assert (await log_in(late)).status == 429
            async with operator.get("/blocks") as page:
                assert "127.0.0.1" in await page.text()
            token = await csrf_of(operator, "/blocks")
            data = {"csrf": token, "kind": "ip", "key": "127.0.0.1"}
            async with operator.post("/blocks/unblock", data=data) as done:
                assert "Unblocked 127.0.0.1" in await done.text()
            assert (await log_in(late)).status == 303
    assert await smtp_login(admin, "correct horse battery staple")


@pytest.fixture(params=["memory", "sqlite"])
def state(request: pytest.FixtureRequest, tmp_path: object) -> ThrottleState:
    if request.param == "memory":
        return MemoryThrottleState()
    from pathlib import Path

    return SqliteThrottleState(Path(str(tmp_path)) / "throttle.db")


def test_busiest_and_clear(state: ThrottleState) -> None:
    for _ in range(3):
        state.add("ip", "192.0.2.1", 100.0)
    state.add("ip", "192.0.2.2", 100.0)
    state.add("ip", "192.0.2.3", 10.0)  # outside the window below
    for _ in range(5):
        state.add("ip", "192.0.2.3", 100.0)
    assert state.busiest("ip", 50.0, 2) == [("192.0.2.3", 5), ("192.0.2.1", 3)]
    state.clear("ip", "192.0.2.3")
    assert state.busiest("ip", 0.0, 1) == [("192.0.2.1", 3), ("192.0.2.2", 1)]
    assert state.count("ip", "192.0.2.3", 0.0) == 0
    assert state.busiest("login", 0.0, 1) == []
