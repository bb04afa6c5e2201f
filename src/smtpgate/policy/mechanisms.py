"""Which SASL mechanisms a connection may use now (README, "SMTP AUTH: the reply contract").

Pure: the answer depends only on the configured list, TLS state and policy.
What each mechanism is (plaintext, channel-bound) is the sasl registry's to
say; the host passes it in ``MechanismRules``. ``gate`` is the check made
when a client names a mechanism: the same rules as EHLO's list, but telling
*why* a mechanism is unusable (504 or 538).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Gate(enum.Enum):
    OPEN = "open"
    UNKNOWN = "unknown"  # not enabled here: 504 5.5.4
    NEEDS_TLS = "needs-tls"  # enabled, but only on an encrypted connection: 538 5.7.11


@dataclass(frozen=True, slots=True)
class MechanismRules:
    configured: tuple[str, ...]  # enabled mechanisms, EHLO order, upper-case
    plaintext: frozenset[str]  # the password crosses the wire (RFC 4954 section 4)
    channel_bound: frozenset[str]  # -PLUS: needs a TLS channel (RFC 5802 section 6)
    plaintext_requires_tls: bool


def gate(rules: MechanismRules, mechanism: str, *, tls_active: bool) -> Gate:
    name = mechanism.upper()  # RFC 4422 section 3.1: names are case-insensitive
    if name not in rules.configured:
        return Gate.UNKNOWN
    if not tls_active and name in rules.channel_bound:
        return Gate.NEEDS_TLS  # channel binding needs a channel
    if not tls_active and rules.plaintext_requires_tls and name in rules.plaintext:
        return Gate.NEEDS_TLS
    return Gate.OPEN


def usable_mechanisms(rules: MechanismRules, *, tls_active: bool) -> tuple[str, ...]:
    """The EHLO AUTH list: configured order, only what would pass ``gate`` now."""
    return tuple(
        name for name in rules.configured if gate(rules, name, tls_active=tls_active) is Gate.OPEN
    )


def mechanism_allowed(mechanism: str, allowed: frozenset[str] | None) -> bool:
    """Per-account ``--allow-mechanisms``: X-PLUS counts as X (binding only adds strength)."""
    if allowed is None:
        return True
    name = mechanism.upper()
    return name in allowed or name.removesuffix("-PLUS") in allowed
