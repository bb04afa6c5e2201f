"""The explicit table of server mechanisms and the facts derived from it.

Each fact about a mechanism is declared once, on its class (``sasl.base.
Mechanism``): its name, the secret scheme it verifies with, whether it binds
to the channel. Everything else (the config's list of known names, which
mechanisms need TLS for the password, which secrets the enabled mechanisms
need stored) is derived here.
"""

from __future__ import annotations

from collections.abc import Iterable

from smtpgate.sasl.base import Mechanism, SecretScheme
from smtpgate.sasl.cram_md5 import CramMd5
from smtpgate.sasl.login import Login
from smtpgate.sasl.names import KNOWN_MECHANISMS as _NAMES
from smtpgate.sasl.plain import Plain
from smtpgate.sasl.scram import ScramSha1, ScramSha1Plus, ScramSha256, ScramSha256Plus

__all__ = [
    "CHANNEL_BOUND_MECHANISMS",
    "KNOWN_MECHANISMS",
    "PLAINTEXT_MECHANISMS",
    "REGISTRY",
    "secret_schemes",
]

_MECHANISMS: tuple[type[Mechanism], ...] = (
    Plain, Login, CramMd5, ScramSha1, ScramSha1Plus, ScramSha256, ScramSha256Plus,
)
REGISTRY: dict[str, type[Mechanism]] = {mech.name: mech for mech in _MECHANISMS}

# Every mechanism smtpgate implements, in this order (config errors, ``user list``); the
# configuration reads the same names from ``names.py``, which must agree.
KNOWN_MECHANISMS: tuple[str, ...] = tuple(REGISTRY)
if KNOWN_MECHANISMS != _NAMES:
    raise ImportError(f"sasl/names.py lists {_NAMES}, the registry {KNOWN_MECHANISMS}")

# The password itself crosses the wire: only over TLS unless configured otherwise
# (RFC 4954 section 4, RFC 4616 section 6).
PLAINTEXT_MECHANISMS: frozenset[str] = frozenset(
    name for name, mech in REGISTRY.items() if mech.secret_scheme is None
)

# -PLUS: bound to the TLS channel, so usable and advertised only on TLS (RFC 5802 section 6).
CHANNEL_BOUND_MECHANISMS: frozenset[str] = frozenset(
    name for name, mech in REGISTRY.items() if mech.channel_binding
)


def secret_schemes(mechanisms: Iterable[str]) -> frozenset[SecretScheme]:
    """The stored secrets the given (known) mechanisms verify with."""
    schemes = (REGISTRY[name.upper()].secret_scheme for name in mechanisms)
    return frozenset(scheme for scheme in schemes if scheme is not None)
