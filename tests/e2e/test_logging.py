"""Log lines: one per refused command with session id, peer, verb and reply code."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.e2e.conftest import ServerFactory


async def test_refused_commands_are_logged_with_verb_and_code(
    running: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await running()
    host, port = server.addresses[2]  # tls = "none", require_auth
    caplog.set_level(logging.INFO, logger="smtpgate")
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()
    writer.write(b"EHLO x\r\nMAIL FROM:<a@b>\r\nFROB\r\nQUIT\r\n")
    while await reader.readline():
        pass
    writer.close()
    lines = [rec.getMessage() for rec in caplog.records if "reply=" in rec.getMessage()]
    assert any("command=MAIL reply=530" in line for line in lines), lines
    assert any("command=? reply=500" in line for line in lines), lines
    assert all("peer=[127.0.0.1]:" in line and "session=" in line for line in lines)
