"""``Server(tls_at_start=False)``, as ``smtpgate serve`` runs its workers: TLS (pyOpenSSL)
is loaded by the first TLS connection, a pair that no longer loads fails only that
connection, and a reload checks the new pair even before any was loaded."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import ssl
from pathlib import Path

import pytest

from smtpgate.server.app import Server
from smtpgate.server.tls_base import TlsConfigError, legacy_tls
from tests.e2e.conftest import make_config


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def starttls(address: tuple[str, int]) -> str:
    with smtplib.SMTP(*address, timeout=10) as smtp:
        smtp.starttls(context=client_tls())
        code, _ = smtp.ehlo()
        assert code == 250
        assert smtp.sock is not None
        return str(smtp.sock.version())  # type: ignore[attr-defined]


async def test_first_tls_connection_loads_the_pair(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with Server(config, tls_at_start=False) as server:
        assert server._tls_contexts == {}  # nothing loaded at start
        version = await asyncio.to_thread(starttls, server.addresses[0])
        assert version.startswith("TLSv1.")
        assert server._tls_contexts  # loaded once, kept for the next connections
        await asyncio.to_thread(starttls, server.addresses[0])


async def test_a_pair_that_stopped_loading_fails_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    async with Server(config, tls_at_start=False) as server:
        config.tls.cert.parent.mkdir(parents=True, exist_ok=True)
        config.tls.key.write_bytes(b"garbage")  # after start, before the first TLS client
        config.tls.cert.write_bytes(b"garbage")

        def implicit() -> bytes:
            with socket.create_connection(server.addresses[1], timeout=10) as sock:
                try:
                    with client_tls().wrap_socket(sock) as tls:
                        return tls.recv(512)
                except (ssl.SSLError, ConnectionError):
                    return b""

        assert await asyncio.to_thread(implicit) == b""
        assert "cannot start TLS" in caplog.text
        # The server still serves plain connections.
        with socket.create_connection(server.addresses[2], timeout=10) as sock:
            assert (await asyncio.to_thread(sock.recv, 512)).startswith(b"220 ")


async def test_reload_checks_the_new_pair_before_any_was_loaded(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"garbage")
    async with Server(config, tls_at_start=False) as server:
        with pytest.raises(TlsConfigError):
            server.reload_tls(type(config.tls)(cert=bad, key=bad))
        assert server._tls_contexts == {}


def test_legacy_tls_without_pyopenssl() -> None:
    assert legacy_tls("1.0") and legacy_tls("1.1")
    assert not legacy_tls("1.2") and not legacy_tls("1.3")


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
