"""CRAM-MD5 (RFC 2195) and the Dovecot CRAM-MD5 secret."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.sasl.base import (
    Challenge,
    CramMd5Secret,
    Failure,
    FailureKind,
    MechanismContext,
    NeedSecret,
    SecretScheme,
    Success,
)
from smtpgate.sasl.cram_md5 import (
    _MD5_INIT,
    CramMd5,
    _md5_compress,
    _md5_finish,
    cram_md5_digest,
    cram_md5_secret,
    format_cram_md5,
    parse_cram_md5,
)
from smtpgate.sasl.scram import derive_scram_secret
from tests.sasl.clients import cram_md5_response

# RFC 2195 section 2 example.
RFC_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC_RESPONSE = b"tim b913a602c7eda7a495b4e6e7334d3890"


def _rfc_mech() -> CramMd5:
    ctx = MechanismContext(
        hostname="postoffice.reston.mci.net", nonce=lambda: "1896", timestamp=lambda: 697170952
    )
    return CramMd5(ctx)


def test_rfc2195_example() -> None:
    mech = _rfc_mech()
    assert mech.start(None) == Challenge(RFC_CHALLENGE)
    expected = NeedSecret(authcid="tim", authzid="", scheme=SecretScheme.CRAM_MD5)
    assert mech.step(RFC_RESPONSE) == expected
    step = mech.resume(cram_md5_secret("tanstaaftanstaaf"))
    assert step == Success(authcid="tim", authzid="")
    assert isinstance(mech.step(RFC_RESPONSE), Failure)  # after the end


def test_wrong_password() -> None:
    mech = _rfc_mech()
    mech.start(None)
    mech.step(RFC_RESPONSE)
    step = mech.resume(cram_md5_secret("tanstaaftanstaaF"))
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID


def test_uppercase_hex_digest_accepted() -> None:
    mech = _rfc_mech()
    mech.start(None)
    assert isinstance(mech.step(RFC_RESPONSE.upper().replace(b"TIM", b"tim")), NeedSecret)
    assert isinstance(mech.resume(cram_md5_secret("tanstaaftanstaaf")), Success)


def test_default_challenge_shape_and_freshness() -> None:
    ctx = MechanismContext(hostname="mx.example.org")
    first, second = CramMd5(ctx).start(None), CramMd5(ctx).start(None)
    assert isinstance(first, Challenge) and isinstance(second, Challenge)
    assert first.data != second.data
    assert first.data.startswith(b"<") and first.data.endswith(b"@mx.example.org>")


def test_round_trip_with_stdlib_hmac() -> None:
    mech = CramMd5(MechanismContext())
    challenge = mech.start(None)
    assert isinstance(challenge, Challenge)
    assert isinstance(mech.step(cram_md5_response("alice", "pässwörd", challenge.data)), NeedSecret)
    assert mech.resume(cram_md5_secret("pässwörd")) == Success(authcid="alice", authzid="")


def test_initial_response_refused() -> None:
    step = CramMd5(MechanismContext()).start(b"tim 0123")
    assert isinstance(step, Failure) and step.kind is FailureKind.MALFORMED


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"tim",
        b"timb913a602c7eda7a495b4e6e7334d3890",
        b" b913a602c7eda7a495b4e6e7334d3890",
        b"tim b913a602c7eda7a495b4e6e7334d389",
        b"tim b913a602c7eda7a495b4e6e7334d38900",
        b"tim g913a602c7eda7a495b4e6e7334d3890",
        b"t\xffm b913a602c7eda7a495b4e6e7334d3890",
        b"t\x00m b913a602c7eda7a495b4e6e7334d3890",
        b"t\x07m b913a602c7eda7a495b4e6e7334d3890",
        b"u" * 2000 + b" b913a602c7eda7a495b4e6e7334d3890",
    ],
)
def test_malformed_response(response: bytes) -> None:
    mech = _rfc_mech()
    mech.start(None)
    step = mech.step(response)
    assert isinstance(step, Failure) and step.kind is FailureKind.MALFORMED


def test_username_with_space_uses_last_space() -> None:
    mech = _rfc_mech()
    mech.start(None)
    digest = hmac.new(b"pw", RFC_CHALLENGE, "md5").hexdigest()
    step = mech.step(f"john smith {digest}".encode())
    assert step == NeedSecret(authcid="john smith", authzid="", scheme=SecretScheme.CRAM_MD5)
    assert isinstance(mech.resume(cram_md5_secret("pw")), Success)


def test_resume_with_wrong_secret_type() -> None:
    mech = _rfc_mech()
    mech.start(None)
    mech.step(RFC_RESPONSE)
    step = mech.resume(derive_scram_secret("SCRAM-SHA-256", "tanstaaftanstaaf"))
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID


def test_out_of_sequence() -> None:
    assert isinstance(CramMd5(MechanismContext()).step(RFC_RESPONSE), Failure)
    mech = _rfc_mech()
    mech.start(None)
    assert isinstance(mech.resume(cram_md5_secret("x")), Failure)  # before the response


# -- the Dovecot secret and the MD5 core -------------------------------------


def test_dovecot_vector() -> None:
    # `doveadm pw -s CRAM-MD5` for "tprzo.40", as published in a Dovecot users file
    expected = "017ec858afebdc0a0bf7ab508169465750335f608ae201ca22b333b0aaa84f3a"
    assert format_cram_md5(cram_md5_secret("tprzo.40")) == expected


def test_layout_is_outer_state_then_inner_state() -> None:
    contexts = cram_md5_secret("key").contexts
    key = b"key".ljust(64, b"\x00")
    outer = struct.pack("<4I", *_md5_compress(_MD5_INIT, bytes(k ^ 0x5C for k in key)))
    inner = struct.pack("<4I", *_md5_compress(_MD5_INIT, bytes(k ^ 0x36 for k in key)))
    assert contexts == outer + inner


def test_parse_format_round_trip() -> None:
    secret = cram_md5_secret("tanstaaftanstaaf")
    text = format_cram_md5(secret)
    assert len(text) == 64 and text == text.lower()
    assert parse_cram_md5(text) == secret
    assert parse_cram_md5("{CRAM-MD5}" + text.upper()) == secret


@pytest.mark.parametrize("bad", ["", "00" * 31, "00" * 33, "zz" * 32, "{CRAM-MD5}"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        parse_cram_md5(bad)


def test_secret_repr_hides_contexts() -> None:
    secret = cram_md5_secret("pw")
    assert secret.contexts.hex() not in repr(secret)


@given(st.binary(max_size=300))
def test_md5_core_matches_hashlib(data: bytes) -> None:
    assert _md5_finish(_MD5_INIT, data, 0) == hashlib.md5(data).digest()


@given(st.binary(max_size=64), st.binary(max_size=200))
def test_md5_resume_after_one_block(block: bytes, data: bytes) -> None:
    block = block.ljust(64, b"\x00")
    state = _md5_compress(_MD5_INIT, block)
    assert _md5_finish(state, data, 64) == hashlib.md5(block + data).digest()


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=100), st.binary(max_size=200))
def test_digest_from_contexts_equals_hmac(password: str, challenge: bytes) -> None:
    expected = hmac.new(password.encode(), challenge, "md5").digest()
    assert cram_md5_digest(cram_md5_secret(password), challenge) == expected


def test_long_key_hashed_first() -> None:
    password = "x" * 100  # RFC 2104 section 2: keys over 64 bytes are hashed
    expected = hmac.new(password.encode(), RFC_CHALLENGE, "md5").digest()
    assert cram_md5_digest(cram_md5_secret(password), RFC_CHALLENGE) == expected


def test_parsed_secret_is_a_cram_md5_secret() -> None:
    assert isinstance(parse_cram_md5("00" * 32), CramMd5Secret)
