"""Helpers for interoperability tests: real third-party clients against a real smtpgate.

Theory of operation
-------------------
Every test here drives a client nobody on this project wrote (swaks, gsasl,
msmtp, curl, Python's smtplib, aiosmtplib) against a running server:

- ``gate`` starts an in-process ``smtpgate.server.app.Server`` on free loopback
  ports (listeners: STARTTLS, implicit TLS, no TLS), with CRAM-MD5 enabled in
  addition to the default mechanisms and a user alice holding every secret.
- Command-line clients run as subprocesses through ``run_tool``, which uses
  ``asyncio.create_subprocess_exec`` so the event loop keeps serving the
  in-process server while the client talks to it. Every run is bounded by a
  timeout; on expiry the client is killed and the test fails with its output.
- ``require_tool(name)`` finds a client on PATH. When it is missing the test is
  skipped, except under ``CI=true``, where it fails: CI must not go green
  because the clients were never installed (``make deb-tools``).

The mail each client submits is read back from the Maildir
(``<data_dir>/mail/<rcpt>/new/``) together with its Received header, whose
``with`` clause (RFC 3848) tells how the message was submitted.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from smtpgate.config.schema import Config
from smtpgate.credentials.base import Account
from smtpgate.credentials.sqlite import open_store
from smtpgate.server.app import Server
from tests.e2e.conftest import PASSWORD, create_user, make_config
from tests.tools import is_ci, require, require_tool

__all__ = [
    "MECHANISMS",
    "PASSWORD",
    "Gate",
    "ToolResult",
    "is_ci",
    "maildir_name",
    "message_bytes",
    "received_with",
    "require",
    "require_tool",
    "run_tool",
    "sasl_lines",
]

# The default mechanisms plus CRAM-MD5 (off by default, SPEC section 3).
MECHANISMS = [
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
]

CLIENT_TIMEOUT = 30.0  # seconds for one client run; a healthy run takes well under 2


@dataclasses.dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr, CRLF folded to LF (some clients echo the server's CRLF)."""
        return (self.stdout + self.stderr).replace("\r\n", "\n")

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


async def run_tool(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout: float = CLIENT_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ToolResult:
    """Run a client to completion without blocking the event loop; kill it on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        result = ToolResult(tuple(argv), -9, out.decode(errors="replace"),
                            err.decode(errors="replace"))
        pytest.fail(f"client timed out after {timeout}s\n{result.describe()}", pytrace=False)
    assert proc.returncode is not None
    return ToolResult(
        tuple(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def received_with(message: bytes) -> str:
    """The ``with`` protocol of the first (our) Received header: ESMTP, ESMTPSA, ..."""
    assert message.startswith(b"Received: "), message[:200]
    header = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    first = re.split(rb"\r?\n(?![ \t])", header, maxsplit=1)[0]
    match = re.search(rb"\swith\s+(\S+)", first)
    assert match is not None, first
    return match.group(1).decode()


_B64_LINE = re.compile(r"^(?:--> |[ ~]?> |C: )?([A-Za-z0-9+/]+={0,2})$")


def sasl_lines(transcript: str) -> list[str]:
    """Decode every line of a client transcript that is pure base64 (SASL payloads)."""
    decoded: list[str] = []
    for line in transcript.splitlines():
        match = _B64_LINE.match(line.strip())
        if match is None or len(match.group(1)) % 4:
            continue
        try:
            decoded.append(base64.b64decode(match.group(1), validate=True).decode())
        except (ValueError, UnicodeDecodeError):
            continue
    return decoded


@dataclasses.dataclass
class Gate:
    """A running smtpgate (in-process or a subprocess) and what tests need to reach it."""

    config: Config
    workdir: Path  # scratch space for client config and message files
    host: str = "127.0.0.1"
    server: Server | None = None  # the in-process server, if it is one

    def _port(self, tls: str) -> int:
        for listener in self.config.listeners:
            if listener.tls == tls:
                return listener.port
        raise LookupError(f"no listener with tls={tls}")

    @property
    def starttls_port(self) -> int:
        return self._port("starttls")

    @property
    def implicit_port(self) -> int:
        return self._port("implicit")

    @property
    def plain_port(self) -> int:
        return self._port("none")

    def stored(self, rcpt: str) -> list[bytes]:
        """Messages delivered to ``rcpt``'s Maildir new/, oldest first."""
        new = self.config.data_dir / "mail" / maildir_name(rcpt) / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]

    def only_message(self, rcpt: str) -> bytes:
        messages = self.stored(rcpt)
        assert len(messages) == 1, f"{len(messages)} messages for {rcpt}"
        return messages[0]

    async def account(self, name: str) -> Account | None:
        store = open_store(self.config.store.url, self.config.data_dir)
        try:
            return await store.get(name)
        finally:
            await store.close()

    def message_file(self, subject: str, rcpt: str) -> Path:
        """An RFC 5322 message with CRLF line ends, written for clients that upload a file."""
        path = self.workdir / f"{subject}.eml"
        path.write_bytes(message_bytes(subject, rcpt))
        return path


def maildir_name(rcpt: str) -> str:
    """The Maildir folder of a recipient (SPEC section 5): lower-cased, percent-encoded."""
    name = "".join(
        c if re.fullmatch(r"[a-z0-9._+@-]", c) else "".join(f"%{b:02x}" for b in c.encode())
        for c in rcpt.lower()
    )
    return "%2e" + name[1:] if name.startswith(".") else name


def message_bytes(subject: str, rcpt: str) -> bytes:
    return (
        f"From: alice@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@client.test>\r\n\r\nHello from {subject}.\r\n"
    ).encode()


@pytest.fixture
async def start_gate(tmp_path: Path) -> AsyncIterator[Any]:
    """``await start_gate(user=True, **config_sections)`` -> a started ``Gate``."""
    servers: list[Server] = []

    async def start(user: bool = True, **sections: Any) -> Gate:
        auth = {"mechanisms": MECHANISMS, **sections.pop("auth", {})}
        config = make_config(tmp_path, auth=auth, **sections)
        if user:
            await create_user(config)
        server = Server(config)
        await server.start()
        servers.append(server)
        assert [a[1] for a in server.addresses] == [lst.port for lst in config.listeners]
        return Gate(config, tmp_path, server=server)

    yield start
    for server in servers:
        await server.stop(grace=1.0)


@pytest.fixture
async def gate(start_gate: Any) -> Gate:
    """A running server with CRAM-MD5 enabled and user alice (password PASSWORD)."""
    result: Gate = await start_gate()
    return result
