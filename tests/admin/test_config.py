"""``[admin] address``: off by default, checked like a listener address at load, and a
taken port stops the start like a taken SMTP port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from smtpgate.config.load import ConfigError, build_config
from smtpgate.server.app import Server
from tests.e2e.conftest import free_port, make_config


def load(tmp_path: Path, admin: object) -> object:
    return build_config({"admin": admin}, file="t.toml", base_dir=tmp_path)


def test_address_is_checked(tmp_path: Path) -> None:
    assert build_config({}, file="t.toml", base_dir=tmp_path).admin.address == ""
    assert build_config({"admin": {"address": "[::1]:8025"}}, file="t.toml",
                        base_dir=tmp_path).admin.address == "[::1]:8025"
    for bad, reason in [("8025", "expected host:port"), ("127.0.0.1:0", "between 1 and 65535"),
                        ("::1:8025", "brackets")]:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, {"address": bad})
        assert str(caught.value).startswith("t.toml: admin.address: ")
        assert reason in str(caught.value)
    with pytest.raises(ConfigError, match=r"admin\.adress: unknown key; did you mean 'address'"):
        load(tmp_path, {"adress": "127.0.0.1:8025"})


async def test_a_taken_admin_port_stops_the_start(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        server = Server(make_config(tmp_path, admin={"address": f"127.0.0.1:{port}"}))
        with pytest.raises(OSError):
            await server.start()
        await server.stop(grace=0)
    # The SMTP ports it had bound are free again.
    for host, smtp_port in server.addresses:
        with socket.socket() as probe:
            probe.bind((host, smtp_port))
