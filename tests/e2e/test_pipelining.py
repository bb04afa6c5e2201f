"""PIPELINING (RFC 2920): the replies to one pipelined batch leave in a single write."""

from __future__ import annotations

import asyncio
import base64
import gc
from typing import Any

from smtpgate.server.connection import Connection
from tests.e2e.conftest import PASSWORD, ServerFactory


class RecordingTransport(asyncio.Transport):
    """The server's own transport, with each ``write`` recorded first. (The transport,
    not ``Connection``: a class compiled by mypyc calls its own methods directly.)"""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattribute__(self, name: str) -> Any:
        if name in ("inner", "writes", "write"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)


async def test_replies_to_a_batch_go_out_in_one_write(running: ServerFactory) -> None:
    server = await running(auth={"plaintext_requires_tls": False, "failure_delay": 0.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[2][1])
    await reader.readline()
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    writer.write(f"EHLO x\r\nAUTH PLAIN {token}\r\n".encode())
    while not (await reader.readline()).startswith(b"235"):
        pass
    ours = writer.get_extra_info("sockname")  # other tests' connections may linger in gc
    [conn] = [o for o in gc.get_objects() if isinstance(o, Connection)
              and o.transport is not None and o.transport.get_extra_info("peername") == ours]
    assert conn.transport is not None
    recorder = RecordingTransport(conn.transport)
    conn.transport = recorder
    writer.write(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    replies = [await reader.readline() for _ in range(4)]
    assert [line[:3] for line in replies] == [b"250", b"250", b"250", b"354"]
    assert recorder.writes == [b"".join(replies)]  # one write carried all four
    writer.close()
