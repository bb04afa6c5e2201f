"""The server on uvloop (a dependency on Linux; ``[server] loop = "auto"`` uses it when
installed)."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import sys
from pathlib import Path

import pytest
import uvloop  # a test extra: installed by make test

from tests.e2e.conftest import PASSWORD, create_user, make_config


def test_starttls_auth_and_delivery_on_uvloop(tmp_path: Path) -> None:
    from smtpgate.server.app import Server

    config = make_config(tmp_path)
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE

    def send(host: str, port: int) -> None:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.starttls(context=client_tls)
            smtp.login("alice", PASSWORD)
            smtp.sendmail("alice@example.org", ["bob@example.org"], b"Subject: hi\r\n\r\nhi\r\n")

    async def main() -> str:
        loop = asyncio.get_running_loop()
        await create_user(config)
        async with Server(config) as server:
            host, port = server.addresses[0]
            await loop.run_in_executor(None, send, host, port)
        return type(loop).__module__

    loop_module = uvloop.run(main())
    assert loop_module.startswith("uvloop")
    new = config.data_dir / "mail" / "bob@example.org" / "new"
    assert len(list(new.iterdir())) == 1


# -- [server] loop: which runner serve uses --------------------------------------------------


def test_auto_and_uvloop_pick_uvloop_when_installed() -> None:
    from smtpgate.server.run import event_loop_runner

    assert event_loop_runner("auto") is uvloop.run
    assert event_loop_runner("uvloop") is uvloop.run
    assert event_loop_runner("asyncio") is asyncio.run


def test_without_uvloop_every_setting_runs_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from smtpgate.server.run import event_loop_runner

    monkeypatch.setitem(sys.modules, "uvloop", None)  # "import uvloop" raises ImportError
    assert event_loop_runner("auto") is asyncio.run
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert event_loop_runner("uvloop") is asyncio.run
    assert "uvloop is not installed" in caplog.text  # asked for explicitly: said so


def test_the_default_is_auto() -> None:
    from smtpgate.config.schema import ServerConfig

    assert ServerConfig().loop == "auto"
