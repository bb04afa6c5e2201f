"""A raw-bytes SMTP client for attack tests: asyncio streams, no smtplib.

Every read has a timeout, so a server that hangs fails the test instead of
hanging it. Replies come back as ``Resp(code, lines)``; ``resp.enh`` is the
enhanced status code of the last line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpgate.server.app import Server
from tests.e2e.conftest import PASSWORD

READ_TIMEOUT = 10.0
# Configuration shared by most attack tests: plaintext AUTH allowed so that
# plain sockets can log in, no delays unless a test asks for them.
PLAIN_OK: dict[str, Any] = {
    "auth": {
        "failure_delay": 0.0,
        "plaintext_requires_tls": False,
        "max_failures_per_connection": 1000,
        "ip_failure_limit": 100_000,
        "user_failure_limit": 100_000,
    }
}


def merge(*configs: dict[str, Any]) -> dict[str, Any]:
    """Merge config section dicts one level deep."""
    out: dict[str, Any] = {}
    for cfg in configs:
        for key, value in cfg.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


@dataclass(frozen=True)
class Resp:
    code: int
    lines: list[str]

    @property
    def enh(self) -> str:
        return self.lines[-1].split(" ", 1)[0] if self.lines else ""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def plain(user: str = "alice", password: str = PASSWORD, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls,
        addr: tuple[str, int],
        *,
        local: str | None = None,
        tls: ssl.SSLContext | None = None,
        greet: bool = True,
    ) -> Raw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                addr[0], addr[1], local_addr=(local, 0) if local else None, ssl=tls,
                server_hostname="" if tls else None, limit=1 << 20,
            ),
            READ_TIMEOUT,
        )
        client = cls(reader, writer)
        if greet:
            resp = await client.reply()
            assert resp.code == 220, resp
        return client

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def reply(self, timeout: float = READ_TIMEOUT) -> Resp:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise ConnectionError(f"connection closed; got so far {lines!r}")
            assert raw.endswith(b"\r\n"), raw
            text = raw[:-2].decode("utf-8")
            lines.append(text[4:])
            if text[3:4] != "-":
                return Resp(int(text[:3]), lines)

    async def cmd(self, line: bytes | str, timeout: float = READ_TIMEOUT) -> Resp:
        data = line.encode() if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.reply(timeout)

    async def ehlo(self, name: str = "client.test") -> Resp:
        resp = await self.cmd(f"EHLO {name}")
        assert resp.code == 250, resp
        return resp

    async def login(self, user: str = "alice", password: str = PASSWORD) -> None:
        resp = await self.cmd(f"AUTH PLAIN {plain(user, password)}")
        assert (resp.code, resp.enh) == (235, "2.7.0"), resp

    async def starttls(self, ctx: ssl.SSLContext) -> None:
        resp = await self.cmd("STARTTLS")
        assert resp.code == 220, resp
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=""), READ_TIMEOUT)

    async def closed(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Read until the server closes; returns what it sent. Fails on timeout."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server did not close within {timeout}s; got {bytes(got)!r}")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), left)
            except (ConnectionResetError, ssl.SSLError, OSError):
                return bytes(got)
            except TimeoutError:
                continue
            if not chunk:
                return bytes(got)
            got += chunk

    async def quiet(self, seconds: float) -> bytes:
        """Whatever arrives within ``seconds`` (b"" if nothing)."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), seconds)
        except TimeoutError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


def addr(server: Server, kind: str = "none") -> tuple[str, int]:
    """The address of the listener of ``kind``: starttls, implicit or none."""
    for listener, address in zip(server.config.listeners, server.addresses, strict=True):
        if listener.tls == kind:
            return address
    raise LookupError(kind)


async def authed(server: Server, *, local: str | None = None) -> Raw:
    """A client on the plaintext listener, greeted, EHLO'd and logged in as alice."""
    client = await Raw.open(addr(server), local=local)
    await client.ehlo()
    await client.login()
    return client


def messages(server: Server) -> list[Path]:
    """Every message in every Maildir's new/ of this server."""
    root = server.config.data_dir / "mail"
    return sorted(root.glob("*/new/*")) if root.exists() else []


def mailboxes(server: Server) -> list[str]:
    root = server.config.data_dir / "mail"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
