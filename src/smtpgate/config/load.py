"""Loading and validating the TOML configuration.

Theory of operation
-------------------
``load_config`` finds the file (argument, else ``$SMTPGATE_CONFIG``, else
``./smtpgate.toml`` if it exists, else none: built-in defaults), parses it with
``tomllib`` and hands the resulting dict to ``build_config``, which checks it
against the dataclasses of ``config.schema`` and returns one frozen ``Config``.

Validation is driven by the schema: for every table, the allowed keys are the
dataclass's field names, the expected type is the field's type hint and the
value constraint is the field's metadata. A few checks need more than one
value or a parser (listener addresses, duplicate listeners, a listener's
profile and trusted networks, mechanism names, the store URL) and are written
out below.

The first problem found raises ``ConfigError``; its ``str`` is exactly one
line, ``FILE: KEY: reason`` (or ``FILE: reason`` when no key is to blame), so
that the CLI can print it as is. Listeners are numbered from 1 in messages:
``listener[1]`` is the first ``[[listener]]`` table of the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import keyword
import math
import os
import socket
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from smtpgate.config.relay import build_relay, local_domains
from smtpgate.config.schema import (
    DEVICE_PROFILE,
    KNOWN_MECHANISMS,
    AdminConfig,
    AuthConfig,
    Config,
    DeliveryConfig,
    ImportConfig,
    LimitsConfig,
    ListenerConfig,
    LogConfig,
    ServerConfig,
    StateConfig,
    StoreConfig,
    SubmissionConfig,
    TlsConfig,
    is_hostname,
    parse_address,
)

ENV_VAR = "SMTPGATE_CONFIG"
DEFAULT_FILE = Path("smtpgate.toml")
BUILTIN = "built-in defaults"  # the "file" named in messages when there is none

_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "tls": TlsConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "store": StoreConfig,
    "state": StateConfig,
    "delivery": DeliveryConfig,
    "submission": SubmissionConfig,
    "import": ImportConfig,
    "admin": AdminConfig,
    "log": LogConfig,
}
_TOP_KEYS = ("data_dir", "hostname", "listener", "relay", *_SECTIONS)
_LISTENER_DERIVED = frozenset({"host", "port", "offer_cram_md5"})


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line: ``FILE: KEY: reason``."""

    def __init__(self, file: str, key: str | None, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = " ".join(reason.split())  # never more than one line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.reason}"
        return f"{self.file}: {self.reason}"


def find_config_path(
    path: Path | None = None, *, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The file to load: ``path``, ``$SMTPGATE_CONFIG``, ``./smtpgate.toml``, or None."""
    if path is not None:
        return path
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def load_config(path: Path | None = None, *, environ: Mapping[str, str] = os.environ) -> Config:
    """Find, read and validate the configuration; raise ``ConfigError``."""
    source = find_config_path(path, environ=environ)
    if source is None:
        return build_config({}, file=BUILTIN, base_dir=Path.cwd())
    return build_config(read_toml(source), file=str(source), base_dir=source.parent)


def read_toml(source: Path) -> dict[str, Any]:
    """Parse one TOML file; every failure is a one-line ``ConfigError``."""
    try:
        with source.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(str(source), None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(source), None, "invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), None, f"invalid TOML: {exc}") from None


def build_config(data: Mapping[str, Any], *, file: str, base_dir: Path) -> Config:
    """Validate parsed TOML ``data``; relative ``data_dir`` resolves against ``base_dir``."""
    return _Builder(file).config(data, base_dir)


def describe(value: object) -> str:
    """A short, one-line rendering of a TOML value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time"


class _Builder:
    """Turns a TOML dict into a ``Config``; ``file`` names the source in errors."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str | None, reason: str) -> NoReturn:
        raise ConfigError(self.file, key, reason)

    def config(self, data: Mapping[str, Any], base_dir: Path) -> Config:
        self.reject_unknown(data, _TOP_KEYS, "")
        top = {k: v for k, v in data.items() if k in ("data_dir", "hostname")}
        skip = frozenset(map(_attribute, _SECTIONS)) | {"listeners"}
        values = self.table(Config, top, "", skip=skip)
        defaults = Config()
        data_dir = Path(os.path.abspath(base_dir / values.get("data_dir", defaults.data_dir)))
        sections = {name: self.section(name, data.get(name, {})) for name in _SECTIONS}
        tls: TlsConfig = sections["tls"]
        config = Config(
            data_dir=data_dir,
            hostname=self.hostname(values.get("hostname", defaults.hostname)),
            server=sections["server"],
            listeners=(
                self.listeners(data["listener"]) if "listener" in data else defaults.listeners
            ),
            tls=TlsConfig(cert=data_dir / tls.cert, key=data_dir / tls.key),
            auth=sections["auth"],
            limits=sections["limits"],
            store=sections["store"],
            state=sections["state"],
            delivery=sections["delivery"],
            submission=sections["submission"],
            import_=sections["import"],
            admin=sections["admin"],
            relay=build_relay(self, data.get("relay", {}), data_dir),
            log=sections["log"],
        )
        self.check_auth_usable(config)
        if config.delivery.mode == "relay" and not config.relay.host:
            self.fail("relay.host", 'required with delivery.mode = "relay"')
        return config

    def section(self, name: str, table: object) -> Any:
        cls = _SECTIONS[name]
        values = self.table(cls, table, name)
        if name == "auth" and "mechanisms" in values:
            values["mechanisms"] = self.mechanisms(values["mechanisms"])
        if name == "store" and "url" in values:
            self.check_store_url(values["url"])
        if name == "admin" and values.get("address"):
            try:
                parse_address(values["address"])
            except ValueError as exc:
                self.fail("admin.address", str(exc))
        if name == "delivery" and "local_domains" in values:
            values["local_domains"] = local_domains(self, values["local_domains"])
        if name == "state" and values.get("url"):
            self.check_state_url(values["url"])
        return cls(**values)

    def table(
        self, cls: type[Any], table: object, prefix: str, skip: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Check ``table`` against the fields of ``cls``; return the values it sets."""
        if not isinstance(table, dict):
            self.fail(prefix, f"expected a table, got {describe(table)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
        self.reject_unknown(table, tuple(fields), prefix)
        hints = typing.get_type_hints(cls)
        return {
            key: self.value(_join(prefix, key), hints[key], fields[key].metadata, value)
            for key, value in table.items()
        }

    def reject_unknown(self, table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                import difflib  # for a typo only

                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(_join(prefix, key), f"unknown key{hint}")

    def value(self, key: str, hint: Any, meta: Mapping[str, Any], value: object) -> Any:
        """Check one value against its type hint and constraint metadata."""
        origin = typing.get_origin(hint)
        if origin is Literal:
            choices = typing.get_args(hint)
            if value not in choices:
                names = ", ".join(choice or '""' for choice in choices)
                self.fail(key, f"must be one of {names}, got {describe(value)}")
            return value
        if origin is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.fail(key, f"expected an array of strings, got {describe(value)}")
            return tuple(value)
        if hint is bool:
            if not isinstance(value, bool):
                self.fail(key, f"expected true or false, got {describe(value)}")
            return value
        if hint is int:
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(key, f"expected an integer, got {describe(value)}")
            return self.bounded(key, value, meta)
        if hint is float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                self.fail(key, f"expected a number, got {describe(value)}")
            if not math.isfinite(value):
                self.fail(key, f"must be a finite number, got {describe(value)}")
            return float(self.bounded(key, value, meta))
        if hint is str or hint is Path:
            if not isinstance(value, str):
                self.fail(key, f"expected a string, got {describe(value)}")
            if hint is Path:
                if not value or "\0" in value:
                    self.fail(key, "expected a path, got an empty string or NUL")
                return Path(value)
            return value
        raise TypeError(f"config schema: no loader for {hint!r}")  # a bug, not bad input

    def bounded(self, key: str, value: float, meta: Mapping[str, Any]) -> float:
        if "min" in meta and value < meta["min"]:
            self.fail(key, f"must be at least {meta['min']}, got {value}")
        if "above" in meta and value <= meta["above"]:
            self.fail(key, f"must be greater than {meta['above']}, got {value}")
        return value

    def hostname(self, name: str) -> str:
        if not name:
            return socket.getfqdn()
        if not is_hostname(name):
            self.fail("hostname", f"not a valid host name: {describe(name)}")
        return name

    def listeners(self, tables: object) -> tuple[ListenerConfig, ...]:
        if not isinstance(tables, list):
            self.fail("listener", f"expected [[listener]] tables, got {describe(tables)}")
        if not tables:
            self.fail("listener", "at least one [[listener]] is required")
        result: list[ListenerConfig] = []
        seen: dict[tuple[str, int], int] = {}
        for number, table in enumerate(tables, start=1):
            prefix = f"listener[{number}]"
            values = self.table(ListenerConfig, table, prefix, skip=_LISTENER_DERIVED)
            if "address" not in values:
                self.fail(f"{prefix}.address", "required (host:port)")
            try:
                host, port = parse_address(values["address"])
            except ValueError as exc:
                self.fail(f"{prefix}.address", str(exc))
            if (host.lower(), port) in seen:
                other = seen[(host.lower(), port)]
                self.fail(f"{prefix}.address", f"same address as listener[{other}]")
            seen[(host.lower(), port)] = number
            if "trusted_networks" in values:
                self.check_networks(f"{prefix}.trusted_networks", values["trusted_networks"])
            self.check_proxies(prefix, values)
            result.append(ListenerConfig(host=host, port=port, **with_profile(values)))
        return tuple(result)

    def check_networks(self, key: str, networks: tuple[str, ...]) -> None:
        """CIDRs without host bits (a typo must not widen the trust); never everyone."""
        for text in networks:
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                self.fail(key, f"not a network in CIDR form: {describe(text)} ({exc})")
            if network.prefixlen == 0:
                self.fail(key, f"{text} trusts every address: that is an open relay")

    def mechanisms(self, names: tuple[str, ...]) -> tuple[str, ...]:
        result: list[str] = []
        for name in names:
            upper = name.upper()
            if upper not in KNOWN_MECHANISMS:
                known = ", ".join(KNOWN_MECHANISMS)
                self.fail("auth.mechanisms", f"unknown mechanism {describe(name)} (known: {known})")
            if upper in result:
                self.fail("auth.mechanisms", f"{upper} is listed twice")
            result.append(upper)
        return tuple(result)

    def check_store_url(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):
            self.check_postgres_url(url)
            return
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            expected = "expected sqlite:///PATH or postgresql://..."
            self.fail("store.url", f"{expected}, got {describe(url)}")

    def check_postgres_url(self, url: str) -> None:
        """libpq must parse it; the message never quotes it (it may hold a password)."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(url)
        except psycopg.Error:
            self.fail("store.url", "not a valid PostgreSQL connection URL (postgresql://...)")

    def check_state_url(self, url: str) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            self.fail("state.url", f"expected redis://HOST:PORT/DB, got {describe(url)}")

    def check_proxies(self, prefix: str, values: dict[str, Any]) -> None:
        """Every trusted proxy is a CIDR; proxy_protocol without any would refuse all."""
        for text in values.get("trusted_proxies", ()):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.fail(f"{prefix}.trusted_proxies", f"not an address or CIDR: {describe(text)}")
        if values.get("proxy_protocol") and not values.get("trusted_proxies"):
            self.fail(f"{prefix}.trusted_proxies", "required when proxy_protocol = true")

    def check_auth_usable(self, config: Config) -> None:
        if not config.auth.mechanisms and any(lst.require_auth for lst in config.listeners):
            self.fail("auth.mechanisms", "empty, but a listener has require_auth = true")


def with_profile(values: dict[str, Any]) -> dict[str, Any]:
    """A listener's keys with its profile's bundle filled in; keys it sets win."""
    if values.get("profile") == "device":
        return {**DEVICE_PROFILE, **values}
    return values


def _attribute(section: str) -> str:
    """The ``Config`` field of a TOML table: ``[import]`` is ``import_`` (a Python keyword)."""
    return section + "_" if keyword.iskeyword(section) else section


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
