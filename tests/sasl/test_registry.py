"""The mechanism registry."""

from __future__ import annotations

import pytest

from smtpgate.sasl.base import Challenge, MechanismContext, Need
from smtpgate.sasl.registry import PLUS_MECHANISMS, REGISTRY, mechanism_needs

EXPECTED = {
    "PLAIN": Need.PASSWORD,
    "LOGIN": Need.PASSWORD,
    "CRAM-MD5": Need.SECRET,
    "SCRAM-SHA-1": Need.SECRET,
    "SCRAM-SHA-1-PLUS": Need.SECRET,
    "SCRAM-SHA-256": Need.SECRET,
    "SCRAM-SHA-256-PLUS": Need.SECRET,
}


def test_keys() -> None:
    assert set(REGISTRY) == set(EXPECTED)
    assert {"SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"} == PLUS_MECHANISMS


@pytest.mark.parametrize(("name", "need"), EXPECTED.items())
def test_factories_build_named_mechanisms(name: str, need: Need) -> None:
    mech = REGISTRY[name](MechanismContext())
    assert mech.name == name
    assert mech.needs is need
    assert mechanism_needs(name) is need
    assert mechanism_needs(name.lower()) is need
    assert (mech.secret_scheme is None) == (need is Need.PASSWORD)
    assert isinstance(mech.start(None), Challenge)


def test_secret_schemes() -> None:
    schemes = {name: REGISTRY[name].secret_scheme for name in REGISTRY}  # type: ignore[attr-defined]
    assert schemes["SCRAM-SHA-1-PLUS"] == "SCRAM-SHA-1"
    assert schemes["SCRAM-SHA-256-PLUS"] == "SCRAM-SHA-256"
    assert schemes["CRAM-MD5"] == "CRAM-MD5"


def test_unknown_mechanism() -> None:
    with pytest.raises(KeyError):
        mechanism_needs("GSSAPI")


def test_only_cram_md5_is_server_first() -> None:
    firsts = {n for n in REGISTRY if REGISTRY[n](MechanismContext()).server_first}
    assert firsts == {"CRAM-MD5"}
