"""The real ``smtpgate serve`` process, configured by a TOML file, with real clients.

This is the deployment path end to end: ``smtpgate user add --password-stdin``
writes the user database, ``smtpgate serve`` generates its self-signed TLS pair,
binds the listeners of the file, and serves swaks, gsasl (SCRAM-SHA-256-PLUS),
msmtp and curl; then SIGTERM stops it gracefully (SPEC section 2): an idle
client is told 421 and the process exits 0; a client in DATA may finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpgate.config.load import load_config
from tests.e2e.conftest import free_port
from tests.interop.clients import curl, gsasl, msmtp, swaks_send
from tests.interop.conftest import MECHANISMS, PASSWORD, Gate, received_with, run_tool

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def smtpgate_command() -> str:
    """The ``smtpgate`` console script of the interpreter running the tests (.venv/bin)."""
    path = Path(sys.executable).with_name("smtpgate")
    assert path.exists(), f"{path} missing: install the package (make test-venv)"
    return str(path)


def write_config(folder: Path) -> Path:
    ports = [free_port() for _ in range(3)]
    mechanisms = ", ".join(f'"{m}"' for m in MECHANISMS)
    text = f"""\
data_dir = "data"            # relative: resolved against this file's folder
hostname = "mx.test"

[server]
workers = 1

[[listener]]
address = "127.0.0.1:{ports[0]}"
tls = "starttls"

[[listener]]
address = "127.0.0.1:{ports[1]}"
tls = "implicit"

[[listener]]
address = "127.0.0.1:{ports[2]}"
tls = "none"

[auth]
mechanisms = [{mechanisms}]
failure_delay = 0.0
"""
    path = folder / "smtpgate.toml"
    path.write_text(text)
    return path


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log = bytearray()
        assert proc.stderr is not None
        self._reader = asyncio.ensure_future(self._drain(proc.stderr))

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.log += chunk

    @property
    def log_text(self) -> str:
        return self.log.decode(errors="replace")

    async def wait_listening(self, gate: Gate) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        for listener in gate.config.listeners:
            while True:
                if self.proc.returncode is not None:
                    await self._reader
                    pytest.fail(f"smtpgate serve exited {self.proc.returncode}:\n{self.log_text}")
                try:
                    _, writer = await asyncio.open_connection(listener.host, listener.port)
                except OSError:
                    if loop.time() > deadline:
                        pytest.fail(f"smtpgate serve not listening:\n{self.log_text}")
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                break

    async def terminate(self) -> int:
        """SIGTERM, then the exit status (killed and failed after STOP_TIMEOUT)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(f"smtpgate serve ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.log_text}")
        await self._reader
        return status


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Gate, ServeProcess]]:
    config_file = write_config(tmp_path)
    exe = smtpgate_command()
    env = {"SMTPGATE_LOG_LEVEL": "INFO"}
    added = await run_tool([exe, "--config", str(config_file), "user", "add", "alice",
                            "--password-stdin"], stdin=f"{PASSWORD}\n".encode(), env=env)
    assert added.returncode == 0, added.describe()

    proc = await asyncio.create_subprocess_exec(
        exe, "--config", str(config_file), "serve",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}, cwd=tmp_path,
    )
    serve = ServeProcess(proc)
    try:
        gate = Gate(load_config(config_file), tmp_path)
        assert gate.config.data_dir == tmp_path / "data"
        await serve.wait_listening(gate)
        yield gate, serve
    finally:
        if proc.returncode is None:  # the test failed before stopping it: clean up
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve._reader, 5)


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) SMTP reply."""
    lines = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            raise ConnectionError(f"closed after {lines!r}")
        lines += line
        if line[3:4] != b"-":
            return lines


async def test_serve_subprocess_real_clients_then_sigterm(
    served: tuple[Gate, ServeProcess],
) -> None:
    gate, serve = served
    assert gate.config.tls.cert.exists()  # generated on first start

    swaks = await swaks_send(gate, "serve-swaks@example.org", "PLAIN")
    assert swaks.returncode == 0, swaks.describe()
    plus = await gsasl(gate, "SCRAM-SHA-256-PLUS")
    assert plus.returncode == 0 and "235 2.7.0" in plus.output, plus.describe()
    scram = await msmtp(gate, "serve-msmtp@example.org", "scram-sha-256")
    assert scram.returncode == 0, scram.describe()
    login = await curl(gate, "serve-curl@example.org", "LOGIN", implicit=True)
    assert login.returncode == 0, login.describe()
    for client in ("swaks", "msmtp", "curl"):
        assert received_with(gate.only_message(f"serve-{client}@example.org")) == "ESMTPSA"

    # An idle client connected at SIGTERM is told 421 and disconnected; the process exits 0.
    reader, writer = await asyncio.open_connection(gate.host, gate.plain_port)
    assert (await read_reply(reader)).startswith(b"220 ")
    writer.write(b"EHLO client.test\r\n")
    assert (await read_reply(reader)).startswith(b"250")
    status = await serve.terminate()
    assert status == 0, serve.log_text
    assert (await read_reply(reader)).startswith(b"421 4.3.2"), serve.log_text
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert "stopped" in serve.log_text
    assert PASSWORD not in serve.log_text  # nothing secret reaches the log


async def test_serve_subprocess_sigterm_lets_data_finish(
    served: tuple[Gate, ServeProcess],
) -> None:
    gate, serve = served
    ctx = ssl.create_default_context(cafile=gate.config.tls.cert)
    reader, writer = await asyncio.open_connection(
        gate.host, gate.implicit_port, ssl=ctx, server_hostname=gate.config.hostname
    )
    assert (await read_reply(reader)).startswith(b"220 ")
    rcpt = "serve-in-data@example.org"
    for command, expected in [
        (b"EHLO client.test", b"250"),
        (b"AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=", b"235 2.7.0"),
        (b"MAIL FROM:<alice@example.org>", b"250"),
        (f"RCPT TO:<{rcpt}>".encode(), b"250"),
        (b"DATA", b"354"),
    ]:
        writer.write(command + b"\r\n")
        reply = await read_reply(reader)
        assert reply.startswith(expected), (command, reply)
    writer.write(b"Subject: half\r\n\r\nfirst half\r\n")
    await writer.drain()

    serve.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert serve.proc.returncode is None, "exited while a client was in DATA"
    writer.write(b"second half\r\n.\r\n")
    assert (await read_reply(reader)).startswith(b"250"), serve.log_text
    status = await serve.terminate()
    assert status == 0, serve.log_text
    message = gate.only_message(rcpt)
    assert b"first half\r\nsecond half\r\n" in message
    assert received_with(message) == "ESMTPSA"
    writer.close()
