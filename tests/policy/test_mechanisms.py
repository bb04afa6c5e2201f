"""The TLS rules for mechanisms (SPEC section 4), with the registry's facts."""

from __future__ import annotations

import pytest

from smtpgate.policy.mechanisms import Gate, MechanismRules, gate, usable_mechanisms
from smtpgate.sasl.registry import CHANNEL_BOUND_MECHANISMS, PLAINTEXT_MECHANISMS

CONFIGURED = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN")


def rules(plaintext_requires_tls: bool = True) -> MechanismRules:
    return MechanismRules(CONFIGURED, PLAINTEXT_MECHANISMS, CHANNEL_BOUND_MECHANISMS,
                          plaintext_requires_tls)


@pytest.mark.parametrize(
    ("mechanism", "tls", "expected"),
    [
        ("scram-sha-256", False, Gate.OPEN),
        ("SCRAM-SHA-256-PLUS", False, Gate.NEEDS_TLS),
        ("SCRAM-SHA-256-PLUS", True, Gate.OPEN),
        ("PLAIN", False, Gate.NEEDS_TLS),
        ("LOGIN", True, Gate.OPEN),
        ("CRAM-MD5", True, Gate.UNKNOWN),  # implemented but not enabled
        ("XOAUTH2", True, Gate.UNKNOWN),
    ],
)
def test_gate(mechanism: str, tls: bool, expected: Gate) -> None:
    assert gate(rules(), mechanism, tls_active=tls) is expected


def test_usable_mechanisms_keep_the_configured_order() -> None:
    assert usable_mechanisms(rules(), tls_active=True) == CONFIGURED
    assert usable_mechanisms(rules(), tls_active=False) == ("SCRAM-SHA-256",)
    assert usable_mechanisms(rules(False), tls_active=False) == ("SCRAM-SHA-256", "PLAIN", "LOGIN")
