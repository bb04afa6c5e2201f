"""Which SASL mechanisms a connection may use now (SPEC section 4).

Pure: the answer depends only on the configured list, TLS state and policy.
``gate`` is the check made when a client names a mechanism: the same rules as
EHLO's list, but telling *why* a mechanism is unusable (504 or 538).
"""

from __future__ import annotations

import enum

PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


class Gate(enum.Enum):
    OPEN = "open"
    UNKNOWN = "unknown"  # not enabled here: 504 5.5.4
    NEEDS_TLS = "needs-tls"  # enabled, but only on an encrypted connection: 538 5.7.11


def gate(
    mechanism: str, configured: tuple[str, ...], *, tls_active: bool, plaintext_requires_tls: bool
) -> Gate:
    name = mechanism.upper()  # RFC 4422 section 3.1: names are case-insensitive
    if name not in configured:
        return Gate.UNKNOWN
    if not tls_active and name.endswith("-PLUS"):
        return Gate.NEEDS_TLS  # channel binding needs a channel
    if not tls_active and plaintext_requires_tls and name in PLAINTEXT_MECHANISMS:
        return Gate.NEEDS_TLS
    return Gate.OPEN


def usable_mechanisms(
    configured: tuple[str, ...], *, tls_active: bool, plaintext_requires_tls: bool
) -> tuple[str, ...]:
    """The EHLO AUTH list: configured order, only what would pass ``gate`` now."""
    rules = {"tls_active": tls_active, "plaintext_requires_tls": plaintext_requires_tls}
    return tuple(name for name in configured if gate(name, configured, **rules) is Gate.OPEN)


def mechanism_allowed(mechanism: str, allowed: frozenset[str] | None) -> bool:
    """Per-account ``--allow-mechanisms``: X-PLUS counts as X (binding only adds strength)."""
    if allowed is None:
        return True
    name = mechanism.upper()
    return name in allowed or name.removesuffix("-PLUS") in allowed
