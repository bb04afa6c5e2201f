"""A fault in our handling of one client ends that client only (421 4.3.0, one log line).

The fault comes through a real public seam: a delivery target (``Server(...,
delivery=...)``) that raises an exception that is not a ``DeliveryError``, at
each point the connection calls it (on the event loop and in a worker thread).
Clients talk over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpgate.delivery.base import Envelope
from smtpgate.delivery.discard import DiscardDelivery, DiscardTarget
from smtpgate.protocol.replies import Reply
from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK, Raw, authed
from tests.e2e.conftest import create_user, make_config

SECRET = "client-data-7f3a"  # in the exception text: must never reach the log


class Boom(RuntimeError):
    pass


class ExplodingDelivery(DiscardDelivery):
    def write(self, data: bytes) -> None:
        if b"explode" in data:
            raise Boom(f"cannot store {SECRET}")
        super().write(data)


class ExplodingTarget(DiscardTarget):
    """Raises ``Boom`` at the step named by ``where``: rcpt, start or write."""

    def __init__(self, where: str, blocking: bool) -> None:
        self.where = where
        self.blocking = blocking

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        if self.where == "rcpt" and address.startswith("explode"):
            raise Boom(f"bad recipient {SECRET}")
        return None

    def start(self, envelope: Envelope) -> DiscardDelivery:
        if self.where == "start" and envelope.recipients[0].startswith("explode"):
            raise Boom(f"cannot start {SECRET}")
        return ExplodingDelivery()


@pytest.fixture(params=[("rcpt", False), ("start", True), ("start", False), ("write", False),
                        ("write", True)], ids=lambda p: f"{p[0]}-{'thread' if p[1] else 'loop'}")
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, **PLAIN_OK)
    await create_user(config)
    where, blocking = request.param
    server = Server(config, delivery=ExplodingTarget(where, blocking))
    await server.start()
    yield server
    await server.stop(grace=1.0)


async def send_message(client: Raw, recipient: str, body: str) -> tuple[int, str]:
    for line in ("MAIL FROM:<alice@example.org>", f"RCPT TO:<{recipient}>", "DATA"):
        resp = await client.cmd(line)
        if resp.code >= 400:
            return resp.code, resp.enh
    resp = await client.cmd(f"Subject: test\r\n\r\n{body}\r\n.")
    return resp.code, resp.enh


async def test_an_exception_ends_one_client_with_421_and_one_log_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bystander = await authed(server)
    victim = await authed(server)
    assert await send_message(victim, "explode@example.org", "explode") == (421, "4.3.0")
    assert await victim.closed(5) == b""
    # everyone else is served as before, and so is the next client
    assert (await bystander.cmd("NOOP")).code == 250
    assert await send_message(bystander, "bob@example.org", "fine") == (250, "2.0.0")
    newcomer = await authed(server)
    assert await send_message(newcomer, "carol@example.org", "fine") == (250, "2.0.0")
    await bystander.close()
    await newcomer.close()
    for _ in range(100):  # every connection, the crashed one too, gives its slot back
        if not server.connections:
            break
        await asyncio.sleep(0.02)
    assert not server.connections
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" ", 1)[1] for r in errors] == ["internal error: Boom"]
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert SECRET not in record.getMessage() and SECRET not in str(record.args)
    assert "Traceback" not in caplog.text
