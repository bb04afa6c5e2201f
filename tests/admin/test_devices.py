"""The devices page: add a device and read its password once, disable, enable, rotate and
revoke it, each checked by a real SMTP AUTH against the running server."""

from __future__ import annotations

import re

import aiohttp

from tests.admin.conftest import Admin, csrf_of, log_in
from tests.admin.test_throttle import smtp_login

SHOWN = re.compile(r'<code id="device-password">([^<]+)</code>')


async def act(client: aiohttp.ClientSession, action: str, **form: str) -> str:
    token = await csrf_of(client, "/devices")
    async with client.post(f"/devices/{action}", data={"csrf": token, **form}) as page:
        assert page.status == 200
        return await page.text()


def shown(text: str) -> str:
    found = SHOWN.search(text)
    assert found, "no password shown"
    return found.group(1)


async def test_device_lifecycle(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        text = await act(client, "add", name="copier-2", senders="scan@example.test",
                         networks="127.0.0.0/8", max_per_day="50", expires="")
        password = shown(text)
        assert re.fullmatch(r"([a-z2-9]{4}-){5}[a-z2-9]{4}", password)
        async with client.get("/devices") as page:
            listing = await page.text()
        assert "copier-2" in listing and "scan@example.test" in listing and "127.0.0.0/8" in listing
        assert password not in listing  # shown once only
        assert await smtp_login(admin, password, user="copier-2")

        assert "copier-2 disabled." in await act(client, "disable", name="copier-2")
        assert not await smtp_login(admin, password, user="copier-2")
        assert "copier-2 enabled." in await act(client, "enable", name="copier-2")
        assert await smtp_login(admin, password, user="copier-2")

        fresh = shown(await act(client, "rotate", name="copier-2"))
        assert fresh != password
        assert not await smtp_login(admin, password, user="copier-2")
        assert await smtp_login(admin, fresh, user="copier-2")

        assert "Revoked copier-2." in await act(client, "revoke", name="copier-2")
        assert await admin.server.store.get("copier-2") is None


async def test_refusals_change_nothing(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        text = await act(client, "add", name="scanner", senders="")
        assert "Not added: a device needs at least one --sender" in text
        assert await admin.server.store.get("scanner") is None
        assert "Not revoked:" in await act(client, "revoke", name="alice")  # a person
        assert await admin.server.store.get("alice") is not None
        assert "no device ghost" in await act(client, "disable", name="ghost")
        async with client.get("/users") as page:
            assert "alice" in await page.text()


async def test_edit_senders_networks_and_quota(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        password = shown(await act(client, "add", name="scanner", senders="a@example.test",
                                   networks="10.0.0.0/8", max_per_day="5"))
        assert not await smtp_login(admin, password, user="scanner")  # not from 127.0.0.1
        text = await act(client, "edit", name="scanner", senders="b@example.test, c@example.test",
                         networks="127.0.0.0/8", max_per_day="")
        assert "Saved scanner." in text
        account = await admin.server.store.get("scanner")
        assert account is not None
        assert account.senders == ("b@example.test", "c@example.test")
        assert account.networks == ("127.0.0.0/8",) and account.max_per_day is None
        assert await smtp_login(admin, password, user="scanner")  # same password, new network

        assert "Not changed:" in await act(client, "edit", name="scanner", senders="",
                                           networks="", max_per_day="")
        assert "Not changed:" in await act(client, "edit", name="alice", senders="x@example.test")
        after = await admin.server.store.get("scanner")
        assert after is not None and after.senders == account.senders
