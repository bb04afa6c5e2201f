"""[relay], [[relay.account]] and [delivery] local_domains: values, defaults, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smtpgate.config.durations import format_duration, parse_duration, parse_schedule
from smtpgate.config.load import ConfigError, build_config
from smtpgate.config.schema import DEFAULT_RETRY, RelayAccount


def build(tmp_path: Path, **data: Any) -> Any:
    return build_config({"data_dir": "data", **data}, file="t.toml", base_dir=tmp_path)


def fails(tmp_path: Path, key: str, **data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, **data)
    assert info.value.key == key, str(info.value)
    assert "\n" not in str(info.value)
    return info.value.reason


OAUTH = {
    "senders": ["*@example.org"],
    "auth": "xoauth2",
    "username": "dev@example.org",
    "token_url": "https://login.example/token",
    "client_id": "cid",
    "refresh_token_file": "rt",
}


def test_defaults(tmp_path: Path) -> None:
    config = build(tmp_path)
    assert config.delivery.local_domains == ()
    assert config.relay.retry == DEFAULT_RETRY
    assert config.relay.max_queue_lifetime == 5 * 86400
    assert config.relay.delay_warning == 0
    assert config.relay.accounts == (RelayAccount(),)
    assert (config.relay.port, config.relay.tls, config.relay.verify) == (587, "starttls", True)


def test_relay_mode_values(tmp_path: Path) -> None:
    config = build(
        tmp_path,
        delivery={"mode": "relay", "local_domains": ["Example.NET"]},
        relay={
            "host": "smtp.example",
            "retry": "1m, 5m*2, 1h",
            "max_queue_lifetime": "2d",
            "delay_warning": "4h",
            "ca_file": "ca.pem",
            "account": [OAUTH, {"senders": ["*"], "auth": "plain", "username": "u",
                                "password_file": "/etc/pw"}],
        },
    )
    assert config.delivery.local_domains == ("example.net",)
    relay = config.relay
    assert relay.retry == (60, 300, 300, 3600)
    assert (relay.max_queue_lifetime, relay.delay_warning) == (172800, 14400)
    assert relay.ca_file == str(tmp_path / "data" / "ca.pem")
    first, second = relay.accounts
    assert first.refresh_token_file == str(tmp_path / "data" / "rt")
    assert second.password_file == "/etc/pw"


def test_relay_mode_needs_a_host(tmp_path: Path) -> None:
    assert "required" in fails(tmp_path, "relay.host", delivery={"mode": "relay"})


@pytest.mark.parametrize(
    ("relay", "key"),
    [
        ({"retry": "2m, 5x"}, "relay.retry"),
        ({"retry": "2m*0"}, "relay.retry"),
        ({"retry": ""}, "relay.retry"),
        ({"max_queue_lifetime": "0d"}, "relay.max_queue_lifetime"),
        ({"max_queue_lifetime": 5}, "relay.max_queue_lifetime"),
        ({"tls": "ssl"}, "relay.tls"),
        ({"port": 70000}, "relay.port"),
        ({"hots": "x"}, "relay.hots"),
        ({"account": [{"auth": "plain", "username": "u"}]}, "relay.account[1].password_file"),
        ({"account": [{**OAUTH, "token_url": "http://login.example/token"}]},
         "relay.account[1].token_url"),
        ({"account": [{**OAUTH, "refresh_token_file": ""}]},
         "relay.account[1].refresh_token_file"),
        ({"account": [{**OAUTH, "oauth2_flow": "client_credentials"}]},
         "relay.account[1].client_secret_file"),
        ({"account": [OAUTH, {"senders": ["bob"]}]}, "relay.account[2].senders"),
        ({"account": []}, "relay.account"),
    ],
)
def test_bad_relay_values(tmp_path: Path, relay: dict[str, Any], key: str) -> None:
    fails(tmp_path, key, relay={"host": "smtp.example", **relay})


def test_token_url_http_allowed_on_loopback(tmp_path: Path) -> None:
    for url in ("http://127.0.0.1:8080/token", "http://[::1]:9/t", "http://localhost/t"):
        config = build(tmp_path, relay={"account": [{**OAUTH, "token_url": url}]})
        assert config.relay.accounts[0].token_url == url


def test_bad_local_domain(tmp_path: Path) -> None:
    fails(tmp_path, "delivery.local_domains", delivery={"local_domains": ["a b"]})


def test_durations() -> None:
    assert parse_duration(" 90s ") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_schedule("2m, 5m, 10m, 15m, 30m, 1h, 2h") == DEFAULT_RETRY
    for bad in ("5", "m", "-1m", "1w", "1m*", "1m*x"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
    assert [format_duration(s) for s in (7200, 90, 86400, 1.5)] == ["2h", "90s", "1d", "1.5s"]
