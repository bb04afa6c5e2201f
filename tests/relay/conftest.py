"""Fixtures: a real smtpgate in relay mode, a real aiosmtpd smarthost, a real token endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtpgate.config.schema import Config
from smtpgate.relay.service import Relay
from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK
from tests.e2e.conftest import PASSWORD, create_user, free_port, make_config
from tests.relay.upstream import CLIENT_ID, Smarthost, TokenServer

MESSAGE = b"From: alice@local.test\r\nTo: you@remote.test\r\nSubject: relay\r\n\r\nhello\r\n"


def xoauth2_account(tokens: TokenServer, **extra: Any) -> dict[str, Any]:
    return {"senders": ["*"], "auth": "xoauth2", "username": "device@remote.test",
            "token_url": tokens.url, "client_id": CLIENT_ID, "refresh_token_file": "rt",
            **extra}


class RelayEnv:
    """One test's world: token endpoint, smarthost, and smtpgate with its deliverer."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tokens = TokenServer()
        self.smarthost = Smarthost(self.tokens.state)
        self.servers: list[tuple[Server, Relay]] = []
        self.config: Config | None = None
        self.user_created = False

    def make(self, relay: dict[str, Any] | None = None, **sections: Any) -> Config:
        data_dir = self.tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        (data_dir / "rt").write_text("rt-0\n")
        relay_table = {"host": "127.0.0.1", "port": self.smarthost.port, "tls": "none",
                       "retry": "1s", "account": [xoauth2_account(self.tokens)], **(relay or {})}
        self.config = make_config(
            self.tmp_path,
            listener=[{"address": f"127.0.0.1:{free_port()}", "tls": "none",
                       "require_auth": False}],
            delivery={"mode": "relay", "local_domains": ["local.test"]},
            relay=relay_table,
            **{**PLAIN_OK, **sections},
        )
        return self.config

    async def start(self, config: Config | None = None) -> Server:
        config = config or self.config or self.make()
        if not self.user_created:
            await create_user(config)
            self.user_created = True
        relay = Relay(config)
        server = Server(config, delivery=relay.target)
        await server.start()
        await relay.start()
        self.servers.append((server, relay))
        return server

    async def stop_smtpgate(self) -> None:
        while self.servers:
            server, relay = self.servers.pop()
            await server.stop(grace=1.0)
            await relay.stop()

    async def submit(self, rcpts: list[str], sender: str = "alice@local.test",
                     message: bytes = MESSAGE) -> str:
        """Submit as alice (with SMTPUTF8 when an address needs it, RFC 6531)."""
        server = self.servers[-1][0]
        host, port = server.addresses[0]
        async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False,
                                   timeout=10) as client:
            await client.login("alice", PASSWORD)
            utf8 = not (sender.isascii() and all(r.isascii() for r in rcpts))
            _, reply = await client.sendmail(sender, rcpts, message,
                                             mail_options=["SMTPUTF8"] if utf8 else [])
        return reply

    @property
    def queue(self) -> Path:
        assert self.config is not None
        return self.config.data_dir / "queue"

    def queued(self) -> list[str]:
        if not self.queue.exists():
            return []
        return sorted(p.name for p in self.queue.iterdir() if p.suffix == ".msg")

    def record_bytes(self, name: str) -> bytes:
        """The current record of the entry whose file is ``name`` (as ``queued`` lists it):
        its ``.json`` once changed, else the one after the message in the ``.msg``."""
        changed = self.queue / f"{name.removesuffix('.msg')}.json"
        if changed.exists():
            return changed.read_bytes()
        data = (self.queue / name).read_bytes()
        assert data[-33:-17] == b"smtpgate-record ", "no record trailer"
        return data[int(data[-17:-1]):-33]

    def record(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record_bytes(name))
        return data

    def mailbox(self, address: str) -> list[bytes]:
        assert self.config is not None
        new = self.config.data_dir / "mail" / address / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[RelayEnv]:
    world = RelayEnv(tmp_path)
    world.smarthost.start()
    try:
        yield world
    finally:
        await world.stop_smtpgate()
        with contextlib.suppress(AssertionError):  # a test may have stopped it already
            world.smarthost.stop()
        world.tokens.stop()


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
