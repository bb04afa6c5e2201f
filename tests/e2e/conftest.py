"""Fixtures for end-to-end tests: a real Server on loopback ports with a real SQLite store."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from smtpgate.config.load import build_config
from smtpgate.config.schema import Config
from smtpgate.credentials.sqlite import open_store
from smtpgate.credentials.users import add_user
from smtpgate.server.app import Server
from tests.e2e.cluster import Cluster

PASSWORD = "correct horse battery staple"


_HANDED_OUT: set[int] = set()  # a port given once is not given again (two listeners clashed)


def free_port() -> int:
    """A port that is free now, below the kernel's ephemeral range (32768+), so the
    tests' own client connections cannot take it before the server binds it."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def config_data(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """The test configuration as TOML would give it: three loopback listeners."""
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "hostname": "mx.test",
        "listener": [
            {"address": f"127.0.0.1:{free_port()}", "tls": "starttls", "require_auth": True},
            {"address": f"127.0.0.1:{free_port()}", "tls": "implicit", "require_auth": True},
            {"address": f"127.0.0.1:{free_port()}", "tls": "none", "require_auth": True},
        ],
        "auth": {"failure_delay": 0.0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_config(tmp_path: Path, **sections: Any) -> Config:
    return build_config(config_data(tmp_path, **sections), file="test.toml", base_dir=tmp_path)


async def create_user(config: Config, name: str = "alice", password: str = PASSWORD,
                      **kwargs: Any) -> None:
    store = open_store(config.store.url, config.data_dir)
    try:
        await add_user(
            store, name, password,
            allow_mechanisms=kwargs.get("allow_mechanisms"),
            may_act_as=kwargs.get("may_act_as", []),
            cram_md5="CRAM-MD5" in config.auth.mechanisms,
        )
    finally:
        await store.close()


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


ServerFactory = Callable[..., Any]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """``await running(**config_sections)`` -> a started Server with user alice."""
    async with serving(tmp_path) as start:
        yield start


@asynccontextmanager
async def serving(tmp_path: Path, workers: int = 1) -> AsyncIterator[ServerFactory]:
    """The factory of ``running``: an in-process Server, or with ``workers`` > 1 a
    ``smtpgate serve`` process of that many workers (``tests/e2e/cluster.py``)."""
    servers: list[Server | Cluster] = []

    async def start(user: bool = True, **sections: Any) -> Server | Cluster:
        server: Server | Cluster
        if workers > 1:
            server = Cluster(tmp_path, config_data(tmp_path, **sections), workers=workers)
        else:
            server = Server(make_config(tmp_path, **sections))
        if user:
            await create_user(server.config)
        if isinstance(server, Cluster):
            await in_thread(server.start)
        else:
            await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(grace=1.0)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)
