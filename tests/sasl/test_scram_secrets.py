"""Stored SCRAM secrets: derivation, RFC 5803 and Dovecot forms, fakes."""

from __future__ import annotations

import base64

import pytest

from smtpgate.sasl.base import ScramSecret
from smtpgate.sasl.scram import (
    derive_scram_secret,
    fake_scram_secret,
    format_rfc5803,
    parse_dovecot_scram,
    parse_rfc5803,
    verify_password_with_scram,
)

# RFC 5803 section 4 example: the RFC 5802 user, password "pencil".
RFC5803_SHA1 = (
    "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE="
)


def test_rfc5803_example() -> None:
    secret = derive_scram_secret("SCRAM-SHA-1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"))
    assert format_rfc5803("SCRAM-SHA-1", secret) == RFC5803_SHA1
    assert parse_rfc5803(RFC5803_SHA1) == ("SCRAM-SHA-1", secret)


@pytest.mark.parametrize("hash_name", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_rfc5803_round_trip(hash_name: str) -> None:
    secret = derive_scram_secret(hash_name, "pw", iterations=5000)
    assert secret.iterations == 5000 and len(secret.salt) == 16
    assert parse_rfc5803(format_rfc5803(hash_name, secret)) == (hash_name, secret)


@pytest.mark.parametrize("hash_name", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_dovecot_round_trip(hash_name: str) -> None:
    secret = derive_scram_secret(hash_name, "pw")
    fields = (secret.salt, secret.stored_key, secret.server_key)
    text = f"{{{hash_name}}}4096," + ",".join(base64.b64encode(f).decode() for f in fields)
    assert parse_dovecot_scram(text) == secret
    assert parse_dovecot_scram(text.split("}", 1)[1]) == secret


def test_dovecot_form_fields() -> None:
    secret = derive_scram_secret("SCRAM-SHA-1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"))
    text = "4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE="
    assert parse_dovecot_scram(text) == secret


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=",
        "SCRAM-MD5$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
        "SCRAM-SHA-1$x:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
        "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf9$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
        "SCRAM-SHA-256" + RFC5803_SHA1[11:],  # SHA-1 sized keys
        "SCRAM-SHA-1$0:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
        "SCRAM-SHA-1$4096:$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
    ],
)
def test_parse_rfc5803_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc5803(bad)


@pytest.mark.parametrize(
    "bad",
    ["", "4096,a,b", "{SCRAM-SHA-256}4096,QSXCR+Q6sek8bf92,AAAA,AAAA", "{SCRAM-SHA-1", "x,y,z,w"],
)
def test_parse_dovecot_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dovecot_scram(bad)


@pytest.mark.parametrize("hash_name", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_verify_password_with_scram(hash_name: str) -> None:
    secret = derive_scram_secret(hash_name, "correct horse")
    assert verify_password_with_scram(hash_name, secret, "correct horse")
    assert not verify_password_with_scram(hash_name, secret, "correct horsE")
    other = "SCRAM-SHA-256" if hash_name == "SCRAM-SHA-1" else "SCRAM-SHA-1"
    assert not verify_password_with_scram(other, secret, "correct horse")


def test_password_is_saslprepped() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "I\u00adX", salt=b"salt")
    assert secret == derive_scram_secret("SCRAM-SHA-256", "IX", salt=b"salt")
    assert verify_password_with_scram("SCRAM-SHA-256", secret, "\u2168")


def test_password_saslprep_rejects_falls_back_to_raw() -> None:
    raw = "pw\U0001f600"  # unassigned in Unicode 3.2: SASLprep (stored) refuses it
    secret = derive_scram_secret("SCRAM-SHA-256", raw, salt=b"salt")
    assert verify_password_with_scram("SCRAM-SHA-256", secret, raw)
    assert not verify_password_with_scram("SCRAM-SHA-256", secret, "pw")


@pytest.mark.parametrize(
    ("hash_name", "kwargs"),
    [
        ("SCRAM-SHA-512", {}),
        ("SCRAM-SHA-256", {"iterations": 0}),
        ("SCRAM-SHA-256", {"salt": b""}),
    ],
)
def test_derive_rejects(hash_name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        derive_scram_secret(hash_name, "pw", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("hash_name", "size"), [("SCRAM-SHA-1", 20), ("SCRAM-SHA-256", 32)])
def test_fake_secret_shape(hash_name: str, size: int) -> None:
    fake = fake_scram_secret(hash_name, "ghost", b"server key")
    assert len(fake.salt) == 16 and fake.iterations == 4096
    assert len(fake.stored_key) == len(fake.server_key) == size
    assert fake.stored_key != fake.server_key
    assert fake == fake_scram_secret(hash_name, "ghost", b"server key")
    assert fake != fake_scram_secret(hash_name, "ghost", b"other key")
    assert fake.salt != fake_scram_secret(hash_name, "ghosT", b"server key").salt
    assert fake_scram_secret(hash_name, "ghost", b"k", iterations=10000).iterations == 10000


def test_fake_differs_per_hash() -> None:
    sha1 = fake_scram_secret("SCRAM-SHA-1", "ghost", b"k")
    sha256 = fake_scram_secret("SCRAM-SHA-256", "ghost", b"k")
    assert sha1.salt != sha256.salt


def test_repr_hides_secret_material() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "pw")
    text = repr(secret)
    assert base64.b64encode(secret.stored_key).decode() not in text
    assert repr(secret.salt) not in text and "iterations=4096" in text
    assert isinstance(secret, ScramSecret)
