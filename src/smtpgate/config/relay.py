"""Loading ``[relay]`` and ``[[relay.account]]`` (docs/relay.md), on top of ``config.load``.

Theory of operation
-------------------
``[relay]`` mostly follows the schema-driven rules of ``config.load``: the
plain keys go through the builder's ``table`` check. What needs more is here:

- durations (``retry``, ``max_queue_lifetime``, ``delay_warning``) are
  strings parsed by ``config.durations``; ``delay_warning = ""`` is off;
- ``[[relay.account]]`` tables become ``RelayAccount`` values, numbered from
  1 in messages (``relay.account[2].token_url``); no table at all means one
  account ``senders = ["*"], auth = "none"``;
- file keys (``password_file``, ``client_secret_file``,
  ``refresh_token_file``, ``ca_file``) are made absolute against data_dir;
- what each ``auth`` needs is present (a username; a password file; a token
  URL, client id and the flow's secret), and ``token_url`` is https unless
  its host is a loopback address;
- ``local_domains`` and ``senders`` are lower-cased and checked.

Every problem is the builder's one-line ``ConfigError``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

from smtpgate.config.durations import parse_duration, parse_schedule
from smtpgate.config.schema import RelayAccount, RelayConfig, is_hostname


class _Builder(Protocol):
    """What this module uses of ``config.load``'s builder (no import: no cycle)."""

    def fail(self, key: str | None, reason: str) -> NoReturn: ...

    def table(
        self, cls: type[Any], table: object, prefix: str, skip: frozenset[str] = ...
    ) -> dict[str, Any]: ...

DURATION_KEYS = ("retry", "max_queue_lifetime", "delay_warning", "in_flow_delay")
FILE_KEYS = ("password_file", "client_secret_file", "refresh_token_file")


def build_relay(builder: _Builder, table: object, data_dir: Path) -> RelayConfig:
    """The ``[relay]`` table (with its ``[[relay.account]]`` tables) as a ``RelayConfig``."""
    if not isinstance(table, dict):
        builder.fail("relay", "expected a table")
    plain = {k: v for k, v in table.items() if k not in (*DURATION_KEYS, "account")}
    values: dict[str, Any] = builder.table(
        RelayConfig, plain, "relay", skip=frozenset({*DURATION_KEYS, "accounts"})
    )
    if values.get("port", 587) > 65535:
        builder.fail("relay.port", f"must be at most 65535, got {values['port']}")
    if values.get("host") and not is_hostname(values["host"]) and not _is_ip(values["host"]):
        builder.fail("relay.host", f"not a host name or IP address: {values['host']!r}")
    if values.get("ca_file"):
        values["ca_file"] = _absolute(data_dir, values["ca_file"])
    for key in DURATION_KEYS:
        if key in table:
            values[key] = _duration(builder, key, table[key])
    if "account" in table:
        values["accounts"] = _accounts(builder, table["account"], data_dir)
    return RelayConfig(**values)


def local_domains(builder: _Builder, domains: tuple[str, ...]) -> tuple[str, ...]:
    """``[delivery] local_domains``, lower-cased, each a host name."""
    for domain in domains:
        if not is_hostname(domain):
            builder.fail("delivery.local_domains", f"not a domain name: {domain!r}")
    return tuple(d.lower().rstrip(".") for d in domains)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _duration(builder: _Builder, key: str, value: object) -> Any:
    name = f"relay.{key}"
    if not isinstance(value, str):
        builder.fail(name, "expected a duration string like \"5m\"")
    try:
        if key == "retry":
            return parse_schedule(value)
        if key in ("delay_warning", "in_flow_delay") and not value.strip():
            return 0.0
        return parse_duration(value)
    except ValueError as exc:
        builder.fail(name, str(exc))


def _accounts(builder: _Builder, tables: object, data_dir: Path) -> tuple[RelayAccount, ...]:
    if not isinstance(tables, list) or not tables:
        builder.fail("relay.account", "expected one or more [[relay.account]] tables")
    return tuple(
        _account(builder, table, f"relay.account[{n}]", data_dir)
        for n, table in enumerate(tables, start=1)
    )


def _account(builder: _Builder, table: object, prefix: str, data_dir: Path) -> RelayAccount:
    values: dict[str, Any] = builder.table(RelayAccount, table, prefix)
    for key in FILE_KEYS:
        if values.get(key):
            values[key] = _absolute(data_dir, values[key])
    if "senders" in values:
        values["senders"] = _senders(builder, values["senders"], prefix)
    account = RelayAccount(**values)
    _check_auth(builder, account, prefix)
    return account


def _senders(builder: _Builder, senders: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    if not senders:
        builder.fail(f"{prefix}.senders", "empty: the account would never be used")
    for sender in senders:
        if sender != "*" and ("@" not in sender or "*" in sender.lstrip("*")):
            builder.fail(f"{prefix}.senders", f"expected \"*\", \"*@domain\" or an address: "
                         f"{sender!r}")
    return tuple(s.lower() for s in senders)


def _check_auth(builder: _Builder, account: RelayAccount, prefix: str) -> None:
    def need(key: str, why: str) -> None:
        if not getattr(account, key):
            builder.fail(f"{prefix}.{key}", f"required with {why}")

    if account.auth == "none":
        return
    need("username", f"auth = {account.auth!r}")
    if account.auth in ("plain", "login"):
        need("password_file", f"auth = {account.auth!r}")
        return
    need("token_url", f"auth = {account.auth!r}")
    need("client_id", f"auth = {account.auth!r}")
    if account.oauth2_flow == "client_credentials":
        need("client_secret_file", "oauth2_flow = \"client_credentials\"")
    else:
        need("refresh_token_file", "oauth2_flow = \"refresh_token\"")
    for key in ("token_url", "device_url"):
        url = getattr(account, key)
        if url and not (url.startswith("https://") or
                        (url.startswith("http://") and is_loopback_url(url))):
            builder.fail(f"{prefix}.{key}", f"must be https (http only on loopback): {url!r}")


def _absolute(data_dir: Path, value: str) -> str:
    return os.path.abspath(data_dir / value)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
