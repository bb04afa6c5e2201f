"""The explicit table of server mechanisms, by their IANA SASL names."""

from __future__ import annotations

from smtpgate.sasl.base import MechanismFactory, Need
from smtpgate.sasl.cram_md5 import CramMd5
from smtpgate.sasl.login import Login
from smtpgate.sasl.plain import Plain
from smtpgate.sasl.scram import ScramSha1, ScramSha1Plus, ScramSha256, ScramSha256Plus

__all__ = ["PLUS_MECHANISMS", "REGISTRY", "mechanism_needs"]

REGISTRY: dict[str, MechanismFactory] = {
    "PLAIN": Plain,
    "LOGIN": Login,
    "CRAM-MD5": CramMd5,
    "SCRAM-SHA-1": ScramSha1,
    "SCRAM-SHA-1-PLUS": ScramSha1Plus,
    "SCRAM-SHA-256": ScramSha256,
    "SCRAM-SHA-256-PLUS": ScramSha256Plus,
}

# Channel-bound mechanisms: advertised only on TLS (SPEC section 4, RFC 5802 section 6).
PLUS_MECHANISMS: frozenset[str] = frozenset(name for name in REGISTRY if name.endswith("-PLUS"))

_NEEDS: dict[str, Need] = {
    "PLAIN": Plain.needs,
    "LOGIN": Login.needs,
    "CRAM-MD5": CramMd5.needs,
    "SCRAM-SHA-1": ScramSha1.needs,
    "SCRAM-SHA-1-PLUS": ScramSha1Plus.needs,
    "SCRAM-SHA-256": ScramSha256.needs,
    "SCRAM-SHA-256-PLUS": ScramSha256Plus.needs,
}


def mechanism_needs(name: str) -> Need:
    """What ``name`` (case-insensitive, RFC 4422 section 3.1) needs from the store.

    KeyError for a mechanism not in REGISTRY.
    """
    return _NEEDS[name.upper()]
