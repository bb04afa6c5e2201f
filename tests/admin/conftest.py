"""Fixtures for the admin listener: a real Server with ``[admin] address`` on loopback,
an admin account in its real SQLite store, and an aiohttp client that logs in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smtpgate.admin.accounts import add_admin
from smtpgate.config.schema import Config
from smtpgate.credentials.sqlite import SqliteStore, open_store
from smtpgate.delivery.discard import DiscardTarget
from smtpgate.server.app import Server
from tests.e2e.conftest import create_user, free_port, make_config

ADMIN, ADMIN_PASSWORD = "root", "admin pass phrase"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def admin_sections(**sections: Any) -> dict[str, Any]:
    auth = {"failure_delay": 0.0, "plaintext_requires_tls": False, **sections.pop("auth", {})}
    return {"admin": {"address": f"127.0.0.1:{free_port()}"}, "auth": auth, **sections}


async def create_admin(config: Config, name: str = ADMIN, password: str = ADMIN_PASSWORD) -> None:
    store = open_store(config.store.url, config.data_dir)
    assert isinstance(store, SqliteStore)
    try:
        await add_admin(store, name, password)
    finally:
        await store.close()


@dataclass
class Admin:
    server: Server
    url: str  # http://127.0.0.1:PORT

    @property
    def config(self) -> Config:
        return self.server.config

    @property
    def smtp_port(self) -> int:
        """The plain-text SMTP listener (tests/e2e/conftest: the third)."""
        return self.server.addresses[2][1]

    def client(self) -> aiohttp.ClientSession:
        # unsafe: keep cookies of an IP-address host (aiohttp drops them by default).
        return aiohttp.ClientSession(
            self.url, cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=30),
        )


async def csrf_of(client: aiohttp.ClientSession, path: str) -> str:
    async with client.get(path) as response:
        found = CSRF.search(await response.text())
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def log_in(
    client: aiohttp.ClientSession, name: str = ADMIN, password: str = ADMIN_PASSWORD
) -> aiohttp.ClientResponse:
    token = await csrf_of(client, "/login")
    async with client.post(
        "/login", data={"csrf": token, "name": name, "password": password}, allow_redirects=False
    ) as response:
        await response.read()
        return response


async def start_admin(tmp_path: Path, **sections: Any) -> Admin:
    config = make_config(tmp_path, **admin_sections(**sections))
    server = Server(config, delivery=DiscardTarget())
    await create_user(config)
    await create_admin(config)
    await server.start()
    assert server.admin is not None and server.admin.address is not None
    host, port = server.admin.address
    return Admin(server, f"http://{host}:{port}")


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    running = await start_admin(tmp_path, auth={"ip_failure_limit": 3})
    try:
        yield running
    finally:
        await running.server.stop(grace=1.0)
