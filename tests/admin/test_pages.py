"""The users page adds and deletes through credentials/users.py; the configuration
page hides secrets; the admin CLI manages admin accounts."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import sys
from pathlib import Path

import pytest

from smtpgate.admin.accounts import check_login
from smtpgate.admin.pages import effective_config, hide_url_password
from smtpgate.cli.main import main
from smtpgate.config.schema import StoreConfig
from smtpgate.credentials.sqlite import SqliteStore
from tests.admin.conftest import Admin, csrf_of, log_in
from tests.admin.test_throttle import smtp_login
from tests.e2e.conftest import make_config


async def test_add_a_user_with_a_password_shown_once(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        token = await csrf_of(client, "/users")
        async with client.post("/users/add", data={"csrf": token, "name": "copier3"}) as page:
            text = await page.text()
        found = re.search(r'<code id="new-password">([^<]+)</code>', text)
        assert found and len(found.group(1)) == 24
        password = found.group(1)
        async with client.get("/users") as again:
            listing = await again.text()
        assert "copier3" in listing and password not in listing  # shown that once only
    store = admin.server.store
    account = await store.get("copier3")
    assert account is not None and account.password_hash is not None
    assert password not in account.password_hash


async def test_add_with_a_chosen_password_then_delete(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        token = await csrf_of(client, "/users")
        data = {"csrf": token, "name": "scanner", "password": "scanner pass 1"}
        async with client.post("/users/add", data=data) as page:
            assert "Added user scanner." in await page.text()
        async with client.post("/users/add", data=data) as page:
            assert "already exists" in await page.text()
        async with client.post("/users/add", data={**data, "name": "bad:name"}) as page:
            assert "Not added" in await page.text()
        assert await admin.server.store.get("scanner") is not None
        async with client.post("/users/delete", data={"csrf": token, "name": "scanner"}) as page:
            assert "Deleted user scanner." in await page.text()
    assert await admin.server.store.get("scanner") is None


async def test_a_user_added_on_the_page_can_send(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        token = await csrf_of(client, "/users")
        data = {"csrf": token, "name": "alice2", "password": "alice2 password"}
        async with client.post("/users/add", data=data):
            pass
    assert await smtp_login(admin, "alice2 password", user="alice2")
    assert not await smtp_login(admin, "alice2 password", user="alice")


def test_secrets_are_hidden(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    shown = dict(effective_config(config))
    assert shown["admin.address"] == '""'
    assert shown["auth.ip_failure_limit"] == "10"
    assert shown["listener[1].tls"] == '"starttls"'
    assert "listener[1].port" not in shown  # derived from address, not a key
    assert "import.max_bcrypt_cost" in shown
    remote = dataclasses.replace(config, store=StoreConfig("postgresql://gate:s3cret@db:5432/g"))
    value = dict(effective_config(remote))["store.url"]
    assert "s3cret" not in value and "(hidden)" in value and "gate@" not in value
    assert hide_url_password("redis://:pw@h:6379/0") == "redis://:(hidden)@h:6379/0"
    assert hide_url_password("sqlite:///users.db") == "sqlite:///users.db"


async def test_config_page(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        async with client.get("/config") as page:
            text = await page.text()
    assert "admin.address" in text and admin.config.admin.address in text


def run_cli(config_file: Path, *args: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    return main(["--config", str(config_file), *args])


def test_admin_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "smtpgate.toml"
    config_file.write_text('data_dir = "data"\n')
    add = ("admin", "add", "boss", "--password-stdin")
    assert run_cli(config_file, *add, stdin="boss pw\n", monkeypatch=monkeypatch) == 0
    assert run_cli(config_file, *add, stdin="other\n", monkeypatch=monkeypatch) == 1
    assert "already exists" in capsys.readouterr().err
    assert run_cli(config_file, *add[:-1], monkeypatch=monkeypatch) == 1  # stdin not a tty

    async def stored() -> None:
        store = SqliteStore(tmp_path / "data" / "users.db")
        try:
            assert await check_login(store, "boss", "boss pw") == "boss"
            assert await check_login(store, "boss", "other") is None
            assert await store.get("boss") is None  # an admin is no SMTP user
            hashed = await store.admin_hash("boss")
            assert hashed is not None and hashed.startswith("{ARGON2ID}")
            assert "boss pw" not in hashed
        finally:
            await store.close()

    asyncio.run(stored())
    out = capsys.readouterr()
    assert "boss pw" not in out.out + out.err
    assert run_cli(config_file, "admin", "del", "boss", monkeypatch=monkeypatch) == 0
    assert run_cli(config_file, "admin", "del", "boss", monkeypatch=monkeypatch) == 1
    assert "unknown admin boss" in capsys.readouterr().err
