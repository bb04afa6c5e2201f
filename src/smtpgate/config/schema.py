"""The typed configuration: one frozen tree of values, every default declared here.

Theory of operation
-------------------
Each TOML table (README.md, "Configuration") is one frozen, slotted dataclass
below, and each of its keys is one field. A field's *default* is the built-in
default and its *metadata* carries the value constraint the loader enforces:

    min      the smallest allowed value (integers and numbers)
    above    the value must be strictly greater (numbers)

The loader (``config.load``) reads the field names, type hints, defaults and
constraints from these classes; nothing else knows a default. Paths are stored
as given here; the loader makes them absolute (``data_dir`` against the config
file's folder, ``tls.cert``/``tls.key`` against ``data_dir``). The store URL
stays a string: the store resolves ``sqlite:///relative`` against ``data_dir``.

``ListenerConfig.host``/``port`` are derived from ``address`` by
``parse_address``, and ``offer_cram_md5`` from ``profile``: a ``[[listener]]``
table never sets them. ``profile = "device"`` is expanded by the loader into
the keys of ``DEVICE_PROFILE`` (docs/devices.md); a key the table sets itself
wins over the profile.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Every SASL mechanism smtpgate implements: the sasl registry is the one list.
from smtpgate.sasl.names import KNOWN_MECHANISMS as KNOWN_MECHANISMS  # noqa: PLC0414

TlsMode = Literal["none", "starttls", "implicit"]
ListenerProfile = Literal["", "device"]
TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]
BareLf = Literal["reject", "normalize"]
EightBit = Literal["reject", "accept"]
DeliveryMode = Literal["maildir", "discard", "relay"]
RelayTls = Literal["starttls", "implicit", "none"]
RelayAuth = Literal["none", "plain", "login", "xoauth2", "oauthbearer"]
OAuthFlow = Literal["refresh_token", "client_credentials"]
LogFormat = Literal["text", "json"]
LogUserNames = Literal["plain", "hashed", "omit"]
StateFailure = Literal["open", "closed"]
EventLoop = Literal["auto", "uvloop", "asyncio"]

DEFAULT_MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "PLAIN",
    "LOGIN",
)


def _min(n: int) -> dict[str, int]:
    return {"min": n}


def _above(n: float) -> dict[str, float]:
    return {"above": n}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    workers: int = field(default=0, metadata=_min(0))  # 0: one process per core
    # "auto": uvloop when it is installed (a default dependency on Linux), else asyncio's.
    loop: EventLoop = "auto"


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    address: str  # as written: "127.0.0.1:2587", "[::1]:2587", "localhost:2587"
    host: str  # without brackets: "127.0.0.1", "::1", "localhost"
    port: int
    tls: TlsMode = "starttls"
    require_auth: bool = True
    proxy_protocol: bool = False  # a PROXY v1/v2 header comes first (server/proxy_header.py)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs allowed to send it; checked by the loader
    profile: ListenerProfile = ""
    min_tls: TlsVersion = "1.2"  # below 1.2 needs tls_ciphers with @SECLEVEL=0
    tls_ciphers: str = ""  # OpenSSL cipher string; "": see server/tls.py
    advertise_auth_equals: bool = False  # also "250-AUTH=..." for old clients
    auth_after_helo: bool = False
    bare_lf: BareLf = "reject"
    eight_bit: EightBit = "reject"  # without BODY=8BITMIME
    trusted_networks: tuple[str, ...] = ()  # CIDRs that may submit without AUTH
    offer_cram_md5: bool = False  # derived from profile: CRAM-MD5 on this listener


# What ``profile = "device"`` sets (docs/devices.md); keys set on the listener win.
DEVICE_PROFILE: dict[str, object] = {
    "min_tls": "1.0",
    "tls_ciphers": "DEFAULT@SECLEVEL=0",
    "advertise_auth_equals": True,
    "auth_after_helo": True,
    "bare_lf": "normalize",
    "eight_bit": "accept",
    "offer_cram_md5": True,
}


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path = Path("tls/cert.pem")  # relative to data_dir
    key: Path = Path("tls/key.pem")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS  # EHLO order, upper-case
    plaintext_requires_tls: bool = True
    failure_delay: float = field(default=2.0, metadata=_min(0))
    max_failures_per_connection: int = field(default=3, metadata=_min(1))
    ip_failure_limit: int = field(default=10, metadata=_min(1))
    ip_failure_window: float = field(default=300.0, metadata=_above(0))
    user_failure_limit: int = field(default=20, metadata=_min(1))
    user_failure_window: float = field(default=900.0, metadata=_above(0))
    show_user_in_received: bool = False
    enforce_sender: bool = False  # people send only as their --address list (or their name)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: int = field(default=26_214_400, metadata=_min(1))
    max_recipients: int = field(default=100, metadata=_min(1))
    max_connections: int = field(default=1000, metadata=_min(1))
    max_connections_per_ip: int = field(default=20, metadata=_min(1))
    command_timeout: float = field(default=300.0, metadata=_above(0))
    data_timeout: float = field(default=600.0, metadata=_above(0))
    max_data_time: float = field(default=3600.0, metadata=_above(0))  # a whole DATA/BDAT
    max_errors: int = field(default=10, metadata=_min(1))


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """``[import]``: the most work one imported hash may ask of every AUTH for it.

    ``user import`` refuses a hash above these, naming its line. At its limit, one
    verification takes well under a second (at most 0.65 s measured on a shared
    2-core machine: Argon2, 128 MiB, 6 passes) and no gigabytes; yet the limits
    accept what Dovecot (``doveadm pw``) and common tools write by default:
    Argon2 at 32-100 MiB and 2-5 passes (Dovecot, argon2-cffi, PHP, Django,
    OWASP), bcrypt cost 5-12 (Dovecot, htpasswd, PHP, Python bcrypt), SHA-crypt
    at 5000 rounds (glibc, Dovecot) up to libpass's 656000, SCRAM at 4096
    iterations (RFC 7677, Dovecot, PostgreSQL) up to OWASP's 600000. Each
    ``min`` is the algorithm's own minimum: a lower limit would refuse every hash.
    """

    max_argon2_memory_kib: int = field(default=131_072, metadata=_min(8))  # 128 MiB
    max_argon2_passes: int = field(default=6, metadata=_min(1))
    max_argon2_parallelism: int = field(default=16, metadata=_min(1))  # threads per verify
    max_bcrypt_cost: int = field(default=13, metadata=_min(4))  # 2^13 rounds
    max_sha_crypt_rounds: int = field(default=1_000_000, metadata=_min(1000))
    max_scram_iterations: int = field(default=1_000_000, metadata=_min(1))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///users.db"  # relative to data_dir; the store resolves it


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``: limits shared by instances (src/smtpgate/state/, docs/scaling.md)."""

    url: str = ""  # "redis://host:6379/0"; "" keeps limits per instance
    on_failure: StateFailure = "open"  # Redis unreachable: count per instance, or refuse


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    mode: DeliveryMode = "maildir"
    local_domains: tuple[str, ...] = ()  # lower-case; these go to Maildir even in relay mode


# Relay (docs/relay.md). File keys are absolute after load ("" = not set); durations are
# seconds, written in TOML as "2m", "1h", "5d" (config.durations).
DEFAULT_RETRY: tuple[float, ...] = (120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0)


@dataclass(frozen=True, slots=True)
class RelayAccount:
    senders: tuple[str, ...] = ("*",)  # "*", "*@domain" or exact addresses; lower-case
    auth: RelayAuth = "none"
    username: str = ""
    password_file: str = ""  # relative to data_dir
    oauth2_flow: OAuthFlow = "refresh_token"
    token_url: str = ""  # https, or http on a loopback address
    client_id: str = ""
    client_secret_file: str = ""
    scope: str = ""
    refresh_token_file: str = ""  # written by `smtpgate oauth authorize`, rotated in place
    device_url: str = ""  # device authorization endpoint; "" = derived from token_url


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str = ""  # the smarthost; required when delivery.mode = "relay"
    port: int = field(default=587, metadata=_min(1))
    tls: RelayTls = "starttls"
    verify: bool = True
    ca_file: str = ""  # extra CA bundle, relative to data_dir; "" = the system store
    max_connections: int = field(default=4, metadata=_min(1))
    retry: tuple[float, ...] = DEFAULT_RETRY  # TOML: "2m, 5m, ..." (last repeats)
    max_queue_lifetime: float = 5 * 86400.0  # TOML: "5d"
    delay_warning: float = 0.0  # TOML: "4h"; 0 (TOML "") = no delay notices
    # TOML "1s": while the deliverer is behind, a 250 waits up to this long for it to catch
    # up (Postfix's in_flow_delay); 0 (TOML "") = accept at full speed.
    in_flow_delay: float = 1.0
    accounts: tuple[RelayAccount, ...] = (RelayAccount(),)  # TOML: [[relay.account]]


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = "text"  # standard error, one line per record (ops/logs.py)
    user_names: LogUserNames = "plain"  # login names in AUTH failure lines


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    add_missing_headers: bool = True  # Date and Message-ID (RFC 6409 section 8)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the HTTP listener of /healthz, /readyz, /metrics and the admin page."""

    address: str = ""  # "" = off; "127.0.0.1:8025" or "[::1]:8025"


DEFAULT_LISTENERS: tuple[ListenerConfig, ...] = (
    ListenerConfig("127.0.0.1:2587", "127.0.0.1", 2587, "starttls", True),
    ListenerConfig("127.0.0.1:2465", "127.0.0.1", 2465, "implicit", True),
)


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("smtpgate-data")  # absolute after load_config
    hostname: str = ""  # "" is replaced by the machine's FQDN at load
    server: ServerConfig = ServerConfig()
    listeners: tuple[ListenerConfig, ...] = DEFAULT_LISTENERS  # TOML: [[listener]]
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    store: StoreConfig = StoreConfig()
    state: StateConfig = StateConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    submission: SubmissionConfig = SubmissionConfig()
    import_: ImportConfig = ImportConfig()  # TOML: [import] (a Python keyword)
    admin: AdminConfig = AdminConfig()
    relay: RelayConfig = RelayConfig()
    log: LogConfig = LogConfig()


_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_hostname(text: str) -> bool:
    """A DNS name (letters, digits, '-', '_' labels; optional trailing dot)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_HOSTNAME.fullmatch(label) for label in name.split("."))


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port); ValueError with a reason."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port or [IPv6]:port, got {address!r}")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {inner!r}") from None
        return inner, port
    if ":" in host:
        raise ValueError(f"write IPv6 addresses in brackets, e.g. [::1]:{port}")
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not an IPv4 address: {host!r}") from None
    elif not is_hostname(host):
        raise ValueError(f"not a host name or IPv4 address: {host!r}")
    return host, port
