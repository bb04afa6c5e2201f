"""A client that pipelines everything and half-closes still gets every reply (RFC 2920)."""

from __future__ import annotations

import asyncio
import base64

from tests.e2e.conftest import PASSWORD, ServerFactory


async def test_pipelined_transaction_then_half_close(running: ServerFactory) -> None:
    server = await running(auth={"plaintext_requires_tls": False, "failure_delay": 0.0})
    host, port = server.addresses[2]  # tls = "none"
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    writer.write(
        f"EHLO x\r\nAUTH PLAIN {token}\r\nMAIL FROM:<a@example.org>\r\n"
        "RCPT TO:<bob@example.org>\r\nDATA\r\n".encode()
    )
    await writer.drain()
    while not (await reader.readline()).startswith(b"354"):
        pass
    writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    writer.write_eof()  # the commit (fsync in a thread) is still running when EOF arrives
    rest = await asyncio.wait_for(reader.read(), 10)
    assert rest.startswith(b"250 2.0.0") and b"221 2.0.0" in rest
    new = server.config.data_dir / "mail" / "bob@example.org" / "new"
    assert len(list(new.iterdir())) == 1
    writer.close()
