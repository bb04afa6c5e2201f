"""PIPELINING (RFC 2920): the replies to one pipelined batch leave in a single write."""

from __future__ import annotations

import asyncio
import base64

import pytest

from smtpgate.server.connection import Connection
from tests.e2e.conftest import PASSWORD, ServerFactory


async def test_replies_to_a_batch_go_out_in_one_write(
    running: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_send = Connection._send

    def recording_send(self: Connection, data: bytes) -> None:
        writes.append(data)
        real_send(self, data)

    monkeypatch.setattr(Connection, "_send", recording_send)
    server = await running(auth={"plaintext_requires_tls": False, "failure_delay": 0.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[2][1])
    await reader.readline()
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    writer.write(f"EHLO x\r\nAUTH PLAIN {token}\r\n".encode())
    while not (await reader.readline()).startswith(b"235"):
        pass
    writes.clear()
    writer.write(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    replies = [await reader.readline() for _ in range(4)]
    assert [line[:3] for line in replies] == [b"250", b"250", b"250", b"354"]
    assert writes == [b"".join(replies)]  # one write carried all four
    writer.close()
