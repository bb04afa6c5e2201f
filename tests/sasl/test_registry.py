"""The mechanism registry: one table, and the facts production derives from it."""

from __future__ import annotations

import pytest

from smtpgate.sasl.base import Challenge, MechanismContext, SecretScheme
from smtpgate.sasl.registry import (
    CHANNEL_BOUND_MECHANISMS,
    KNOWN_MECHANISMS,
    PLAINTEXT_MECHANISMS,
    REGISTRY,
    secret_schemes,
)

SCHEMES = {
    "PLAIN": None,
    "LOGIN": None,
    "CRAM-MD5": SecretScheme.CRAM_MD5,
    "SCRAM-SHA-1": SecretScheme.SCRAM_SHA_1,
    "SCRAM-SHA-1-PLUS": SecretScheme.SCRAM_SHA_1,
    "SCRAM-SHA-256": SecretScheme.SCRAM_SHA_256,
    "SCRAM-SHA-256-PLUS": SecretScheme.SCRAM_SHA_256,
}


def test_known_mechanisms() -> None:
    assert tuple(SCHEMES) == KNOWN_MECHANISMS


@pytest.mark.parametrize("name", list(SCHEMES))
def test_each_entry_builds_its_mechanism(name: str) -> None:
    mech = REGISTRY[name](MechanismContext())
    assert isinstance(mech.start(None), Challenge)
    assert REGISTRY[name].secret_scheme is SCHEMES[name]


def test_plaintext_are_the_password_mechanisms() -> None:
    assert {"PLAIN", "LOGIN"} == PLAINTEXT_MECHANISMS


def test_channel_bound_are_the_plus_mechanisms() -> None:
    assert {"SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"} == CHANNEL_BOUND_MECHANISMS


def test_secret_schemes_of_enabled_mechanisms() -> None:
    assert secret_schemes(["PLAIN", "scram-sha-256-plus"]) == {SecretScheme.SCRAM_SHA_256}
    assert SecretScheme.CRAM_MD5 in secret_schemes(["CRAM-MD5"])
    assert secret_schemes(["LOGIN"]) == frozenset()
    with pytest.raises(KeyError):
        secret_schemes(["GSSAPI"])


def test_only_cram_md5_is_server_first() -> None:
    assert {n for n, mech in REGISTRY.items() if mech.server_first} == {"CRAM-MD5"}
