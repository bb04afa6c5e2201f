"""Listener shapes and timeouts over real sockets: IPv6, data_timeout, command_timeout."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from smtpgate.server.app import Server
from tests.e2e.conftest import PASSWORD, create_user, free_port, in_thread, make_config


async def _server(tmp_path: Path, **sections: Any) -> Server:
    config = make_config(tmp_path, **sections)
    await create_user(config)
    server = Server(config)
    await server.start()
    return server


async def test_ipv6_starttls_listener(tmp_path: Path, client_tls: ssl.SSLContext) -> None:
    port = free_port()
    server = await _server(
        tmp_path, listener=[{"address": f"[::1]:{port}", "tls": "starttls", "require_auth": True}]
    )
    try:
        assert server.addresses[0][:2] == ("::1", port)

        def send() -> None:
            with smtplib.SMTP("::1", port, timeout=10) as smtp:
                smtp.starttls(context=client_tls)
                smtp.login("alice", PASSWORD)
                smtp.sendmail("alice@example.org", ["v6@example.org"], b"Subject: v6\r\n\r\nhi\r\n")

        await in_thread(send)
        stored = next((server.config.data_dir / "mail" / "v6@example.org" / "new").iterdir())
        assert b"from " in stored.read_bytes() and b"[IPv6:::1]" in stored.read_bytes()
    finally:
        await server.stop(grace=1.0)


async def _authenticated(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    writer.write(f"EHLO x\r\nAUTH PLAIN {token}\r\n".encode())
    while not (line := await reader.readline()).startswith(b"235"):
        assert line, "closed before AUTH finished"
    return reader, writer


async def _expect_timeout_421(reader: asyncio.StreamReader, *, after: float) -> None:
    """The next reply is 421 4.4.2, about ``after`` seconds from now, then EOF."""
    started = time.monotonic()
    reply = await asyncio.wait_for(reader.readline(), 10)
    assert reply.startswith(b"421 4.4.2"), reply
    assert after * 0.8 <= time.monotonic() - started < after + 4
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed


@pytest.mark.parametrize("body", [b"Subject: stalled\r\n\r\npart of a body", b""])
async def test_data_timeout_closes_a_stalled_body(tmp_path: Path, body: bytes) -> None:
    """data_timeout counts from the 354 and from every read of the body."""
    server = await _server(
        tmp_path,
        auth={"plaintext_requires_tls": False, "failure_delay": 0.0},
        limits={"data_timeout": 1.0, "command_timeout": 30.0},
    )
    try:
        reader, writer = await _authenticated(server.addresses[2][1])
        writer.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        while not (await reader.readline()).startswith(b"354"):
            pass
        writer.write(body)
        await _expect_timeout_421(reader, after=1.0)
        new = server.config.data_dir / "mail" / "c@d.example" / "new"
        assert not new.exists() or not list(new.iterdir())
        writer.close()
    finally:
        await server.stop(grace=1.0)


async def test_command_timeout_closes_an_idle_session(tmp_path: Path) -> None:
    server = await _server(tmp_path, limits={"command_timeout": 1.0})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[2][1])
        await reader.readline()
        await _expect_timeout_421(reader, after=1.0)
        writer.close()
    finally:
        await server.stop(grace=1.0)
