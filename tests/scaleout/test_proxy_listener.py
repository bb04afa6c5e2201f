"""A listener with ``proxy_protocol = true``: real Server, real sockets, real TLS."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smtpgate.server.app import Server
from smtpgate.server.proxy_header import v1_header, v2_header
from tests.attacks.raw import PLAIN_OK, Raw, addr, merge, messages
from tests.e2e.conftest import free_port, serving

CLIENT = ("192.0.2.10", 51000)
SERVER = ("127.0.0.1", 587)


def proxied(trusted: list[str], **sections: Any) -> dict[str, Any]:
    listeners = [
        {"address": f"127.0.0.1:{free_port()}", "tls": tls, "require_auth": True,
         "proxy_protocol": True, "trusted_proxies": trusted}
        for tls in ("starttls", "implicit", "none")
    ]
    return merge(PLAIN_OK, {"listener": listeners}, sections)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(tmp_path) as start:
        yield await start(**proxied(["127.0.0.0/8"], limits={"max_connections_per_ip": 1}))


async def behind(server: Server, header: bytes, kind: str = "none") -> Raw:
    client = await Raw.open(addr(server, kind), greet=False)
    await client.send(header)
    return client


async def test_v1_client_is_the_headers_in_logs_and_received(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpgate.server")
    client = await behind(server, v1_header(CLIENT, SERVER))
    assert (await client.reply()).code == 220
    await client.ehlo()
    await client.login()
    for line in ("MAIL FROM:<alice@mx.test>", "RCPT TO:<bob@mx.test>", "DATA"):
        assert (await client.cmd(line)).code in (250, 354)
    assert (await client.cmd("Subject: hi\r\n\r\nbody\r\n.")).code == 250
    await client.close()
    assert "connect from [192.0.2.10]:51000" in caplog.text
    [message] = messages(server)
    assert b"[192.0.2.10]" in message.read_bytes().split(b"\r\n\r\n")[0]


async def test_per_address_limit_counts_the_headers_address(server: Server) -> None:
    first = await behind(server, v2_header(CLIENT, SERVER))
    assert (await first.reply()).code == 220
    second = await behind(server, v2_header(CLIENT, SERVER))
    assert (await second.reply()).code == 421  # max_connections_per_ip = 1 for 192.0.2.10
    other = await behind(server, v2_header(("192.0.2.11", 1), SERVER))
    assert (await other.reply()).code == 220  # same proxy, another client
    for client in (first, second, other):
        await client.close()


@pytest.mark.parametrize(
    "header",
    [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 192.0.2.10 127.0.0.1 1 2 3\r\n",
        b"\r\n\r\n\x00\r\nQUIX\n",
    ],
)
async def test_missing_or_malformed_header_closes_without_a_reply(
    server: Server, header: bytes
) -> None:
    client = await behind(server, header)
    assert await client.closed() == b""


async def test_untrusted_peer_is_closed_without_a_reply(tmp_path: Path) -> None:
    async with serving(tmp_path) as start:
        server = await start(**proxied(["192.0.2.0/24"]))
        client = await behind(server, v1_header(CLIENT, SERVER))
        assert await client.closed() == b""


async def test_implicit_tls_behind_a_v2_header(
    server: Server, client_tls: ssl.SSLContext
) -> None:
    client = await behind(server, v2_header(CLIENT, SERVER), "implicit")
    await client.writer.start_tls(client_tls, server_hostname="")
    assert (await client.reply()).code == 220
    await client.ehlo()
    await client.login()
    await client.close()


async def test_starttls_behind_a_v1_header(server: Server, client_tls: ssl.SSLContext) -> None:
    client = await behind(server, v1_header(CLIENT, SERVER), "starttls")
    assert (await client.reply()).code == 220
    await client.ehlo()
    await client.starttls(client_tls)
    await client.ehlo()
    await client.login()
    await client.close()


async def test_a_proxy_that_sends_nothing_is_closed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smtpgate.server.proxy_gate.PROXY_HEADER_TIMEOUT", 0.3)
    client = await Raw.open(addr(server), greet=False)
    assert await client.closed(timeout=5.0) == b""
