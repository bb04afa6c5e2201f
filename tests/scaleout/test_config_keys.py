"""The scale-out keys of the configuration: [state] and the listener's PROXY keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smtpgate.config.load import ConfigError, build_config


def build(tmp_path: Path, **data: Any) -> Any:
    return build_config(data, file="t.toml", base_dir=tmp_path)


def listener(**keys: Any) -> dict[str, Any]:
    return {"listener": [{"address": "127.0.0.1:2587", **keys}]}


def test_defaults_keep_everything_per_instance(tmp_path: Path) -> None:
    config = build(tmp_path)
    assert (config.state.url, config.state.on_failure) == ("", "open")
    assert all(not lst.proxy_protocol and lst.trusted_proxies == () for lst in config.listeners)


def test_state_and_proxy_keys_load(tmp_path: Path) -> None:
    config = build(
        tmp_path,
        state={"url": "redis://127.0.0.1:6379/0", "on_failure": "closed"},
        **listener(proxy_protocol=True, trusted_proxies=["10.0.0.0/8", "::1"]),
    )
    assert config.state.url == "redis://127.0.0.1:6379/0"
    assert config.state.on_failure == "closed"
    assert config.listeners[0].trusted_proxies == ("10.0.0.0/8", "::1")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"state": {"url": "http://x"}}, "state.url"),
        ({"state": {"on_failure": "maybe"}}, "state.on_failure"),
        (listener(proxy_protocol=True), "listener[1].trusted_proxies"),
        (listener(proxy_protocol=True, trusted_proxies=["10.0.0.0/33"]),
         "listener[1].trusted_proxies"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, **data)
    assert info.value.key == key
