"""SCRAM server: RFC test vectors, channel binding, and every way to fail."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from smtpgate.sasl.base import (
    Challenge,
    ChannelBindings,
    CramMd5Secret,
    Failure,
    FailureKind,
    MechanismContext,
    NeedSecret,
    SecretScheme,
    Success,
)
from smtpgate.sasl.scram import (
    ScramSha1,
    ScramSha1Plus,
    ScramSha256,
    ScramSha256Plus,
    derive_scram_secret,
    fake_scram_secret,
)
from tests.sasl.clients import ScramClient, run_scram

ScramClass = type[ScramSha1] | type[ScramSha256]


def _fixed(nonce: str) -> Callable[[], str]:
    return lambda: nonce


# RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256):
# user "user", password "pencil", 4096 iterations.
RFC_VECTORS = [
    pytest.param(
        ScramSha1,
        {
            "salt": "QSXCR+Q6sek8bf92",
            "cnonce": "fyko+d2lbbFgONRv9qkxdawL",
            "snonce": "3rfcNHYJY1ZVvWVs7j",
            "final": "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
            "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "server_final": "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        },
        id="rfc5802",
    ),
    pytest.param(
        ScramSha256,
        {
            "salt": "W22ZaJ0SNY7soEsUEjb6gQ==",
            "cnonce": "rOprNGfwEbeRWgbNEkqO",
            "snonce": "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "final": "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "server_final": "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        },
        id="rfc7677",
    ),
]


@pytest.mark.parametrize(("cls", "v"), RFC_VECTORS)
def test_rfc_example(cls: ScramClass, v: dict[str, str]) -> None:
    secret = derive_scram_secret(cls.name, "pencil", base64.b64decode(v["salt"]), 4096)
    mech = cls(MechanismContext(nonce=_fixed(v["snonce"])))
    step = mech.start(f"n,,n=user,r={v['cnonce']}".encode())
    assert step == NeedSecret(authcid="user", authzid="", scheme=SecretScheme(cls.name))
    step = mech.resume(secret)
    assert step == Challenge(f"r={v['cnonce']}{v['snonce']},s={v['salt']},i=4096".encode())
    step = mech.step(v["final"].encode())
    assert step == Success(authcid="user", authzid="", additional=v["server_final"].encode())
    assert isinstance(mech.step(v["final"].encode()), Failure)  # replay


@pytest.mark.parametrize(("cls", "v"), RFC_VECTORS)
def test_rfc_example_client_side(cls: ScramClass, v: dict[str, str]) -> None:
    """Our test client reproduces the RFC's client-final too."""
    client = ScramClient(cls.name, "user", "pencil", cnonce=v["cnonce"])
    assert client.client_first() == f"n,,n=user,r={v['cnonce']}".encode()
    server_first = f"r={v['cnonce']}{v['snonce']},s={v['salt']},i=4096".encode()
    assert client.client_final(server_first) == v["final"].encode()
    assert client.verify_server_final(v["server_final"].encode())


@pytest.mark.parametrize("cls", [ScramSha1, ScramSha256])
@pytest.mark.parametrize("initial", [True, False])
def test_round_trip_with_own_client(cls: ScramClass, initial: bool) -> None:
    secret = derive_scram_secret(cls.name, "s3cr3t")
    client = ScramClient(cls.name, "alice@example.org", "s3cr3t", authzid="bob")
    step, _ = run_scram(cls(MechanismContext()), client, secret, initial=initial)
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == ("alice@example.org", "bob")
    assert step.additional is not None and client.verify_server_final(step.additional)


def test_username_and_authzid_escapes_decoded() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "pw")
    client = ScramClient("SCRAM-SHA-256", "a,b=c", "pw", authzid="x=,y")
    assert b"n=a=2Cb=3Dc" in client.client_first()
    step, _ = run_scram(ScramSha256(MechanismContext()), client, secret)
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == ("a,b=c", "x=,y")


def test_username_is_saslprepped() -> None:
    mech = ScramSha256(MechanismContext())
    step = mech.start("n,,n=\u2168,r=abc".encode())
    assert step == NeedSecret(authcid="IX", authzid="", scheme=SecretScheme.SCRAM_SHA_256)


def test_wrong_password_is_invalid() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "right")
    client = ScramClient("SCRAM-SHA-256", "user", "wrong")
    step, _ = run_scram(ScramSha256(MechanismContext()), client, secret)
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID


def test_fake_secret_never_verifies_and_is_stable() -> None:
    key = b"k" * 32
    fake = fake_scram_secret("SCRAM-SHA-256", "nobody", key)
    assert fake == fake_scram_secret("SCRAM-SHA-256", "nobody", key)
    assert fake.salt != fake_scram_secret("SCRAM-SHA-256", "other", key).salt
    ctx = MechanismContext(nonce=_fixed("srv"))
    _, fake_first = run_scram(
        ScramSha256(ctx), ScramClient("SCRAM-SHA-256", "nobody", "x", cnonce="c"), fake
    )
    step, _ = run_scram(
        ScramSha256(ctx), ScramClient("SCRAM-SHA-256", "nobody", "x", cnonce="c"), fake
    )
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID
    assert fake_first == f"r=csrv,s={base64.b64encode(fake.salt).decode()},i=4096".encode()


# -- channel binding ---------------------------------------------------------

BINDINGS = ChannelBindings(
    tls_server_end_point=b"\x01" * 32, tls_unique=b"\x02" * 12, tls_exporter=b"\x03" * 32
)
TLS13 = ChannelBindings(tls_server_end_point=b"\x01" * 32, tls_exporter=b"\x03" * 32)


@pytest.mark.parametrize("cls", [ScramSha1Plus, ScramSha256Plus])
@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-unique", "tls-exporter"])
def test_channel_binding_success(cls: type[ScramSha1Plus], cb_type: str) -> None:
    secret = derive_scram_secret(cls.secret_scheme or "", "pw")
    data = BINDINGS.get(cb_type)
    assert data is not None
    client = ScramClient(cls.name, "user", "pw", cb_type=cb_type, cb_data=data)
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    step, _ = run_scram(cls(ctx), client, secret)
    assert isinstance(step, Success)
    assert step.additional is not None and client.verify_server_final(step.additional)


def _failure(step: object) -> FailureKind:
    assert isinstance(step, Failure), step
    return step.kind


def _run(
    cls: type[ScramSha256] | type[ScramSha256Plus],
    client: ScramClient,
    ctx: MechanismContext,
    password: str = "pw",
) -> object:
    secret = derive_scram_secret("SCRAM-SHA-256", password)
    return run_scram(cls(ctx), client, secret)[0]


def test_y_flag_is_a_downgrade_when_plus_advertised() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pw", gs2_flag="y")
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    assert _failure(_run(ScramSha256, client, ctx)) is FailureKind.INVALID


def test_y_flag_is_fine_when_plus_not_advertised() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pw", gs2_flag="y")
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=False)
    assert isinstance(_run(ScramSha256, client, ctx), Success)


def test_tls_unique_unavailable_on_tls13() -> None:
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pw", cb_type="tls-unique", cb_data=b"x")
    ctx = MechanismContext(bindings=TLS13, plus_advertised=True)
    assert _failure(_run(ScramSha256Plus, client, ctx)) is FailureKind.INVALID


@pytest.mark.parametrize("cb_type", ["tls-unique-for-telnet", "made-up"])
def test_unknown_binding_type(cb_type: str) -> None:
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pw", cb_type=cb_type, cb_data=b"x")
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    assert _failure(_run(ScramSha256Plus, client, ctx)) is FailureKind.INVALID


def test_plus_without_tls() -> None:
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pw", cb_type="tls-exporter", cb_data=b"x")
    assert _failure(_run(ScramSha256Plus, client, MechanismContext())) is FailureKind.INVALID


@pytest.mark.parametrize("flag", ["n", "y"])
def test_plus_without_p_flag(flag: str) -> None:
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pw", gs2_flag=flag)
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    assert _failure(_run(ScramSha256Plus, client, ctx)) is FailureKind.INVALID


def test_p_flag_on_non_plus_mechanism() -> None:
    data = BINDINGS.tls_exporter or b""
    client = ScramClient("SCRAM-SHA-256", "user", "pw", cb_type="tls-exporter", cb_data=data)
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    assert _failure(_run(ScramSha256, client, ctx)) is FailureKind.INVALID


def test_channel_binding_data_mismatch() -> None:
    client = ScramClient(
        "SCRAM-SHA-256-PLUS", "user", "pw", cb_type="tls-exporter", cb_data=b"\x04" * 32
    )
    ctx = MechanismContext(bindings=BINDINGS, plus_advertised=True)
    assert _failure(_run(ScramSha256Plus, client, ctx)) is FailureKind.INVALID


# -- client-final tampering ---------------------------------------------------


def _to_final(
    cls: type[ScramSha256] | type[ScramSha256Plus] = ScramSha256,
    ctx: MechanismContext | None = None,
    client: ScramClient | None = None,
) -> tuple[ScramSha256 | ScramSha256Plus, ScramClient, bytes]:
    client = client or ScramClient("SCRAM-SHA-256", "user", "pw", cnonce="cnonce")
    mech = cls(ctx or MechanismContext(nonce=_fixed("snonce")))
    assert isinstance(mech.start(client.client_first()), NeedSecret)
    step = mech.resume(derive_scram_secret("SCRAM-SHA-256", "pw"))
    assert isinstance(step, Challenge)
    return mech, client, client.client_final(step.data)


def _replace(final: bytes, attr: bytes, value: bytes) -> bytes:
    parts = final.split(b",")
    return b",".join(attr + b"=" + value if p.startswith(attr + b"=") else p for p in parts)


def test_untampered_final_succeeds() -> None:
    mech, _, final = _to_final()
    assert isinstance(mech.step(final), Success)


def test_c_mismatch_gs2_header() -> None:
    mech, _, final = _to_final()
    bad = _replace(final, b"c", base64.b64encode(b"y,,"))
    assert _failure(mech.step(bad)) is FailureKind.INVALID


def test_wrong_nonce() -> None:
    mech, _, final = _to_final()
    bad = _replace(final, b"r", b"cnonceOTHER")
    assert _failure(mech.step(bad)) is FailureKind.INVALID


@pytest.mark.parametrize("nonce", ["cnonce", "cnoncesnonceX", "xcnoncesnonce"])
def test_wrong_nonce_even_when_signed(nonce: str) -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pw", cnonce="cnonce", final_nonce=nonce)
    mech, _, final = _to_final(client=client)
    assert f",r={nonce},".encode() in final
    assert _failure(mech.step(final)) is FailureKind.INVALID


def test_empty_binding_data_counts_as_unavailable() -> None:
    client = ScramClient("SCRAM-SHA-256-PLUS", "user", "pw", cb_type="tls-exporter", cb_data=b"")
    ctx = MechanismContext(bindings=ChannelBindings(tls_exporter=b""), plus_advertised=True)
    assert _failure(_run(ScramSha256Plus, client, ctx)) is FailureKind.INVALID


def test_client_nonce_only() -> None:
    mech, _, final = _to_final()
    bad = _replace(final, b"r", b"cnonce")
    assert _failure(mech.step(bad)) is FailureKind.INVALID


def test_wrong_proof() -> None:
    mech, _, final = _to_final()
    proof = base64.b64decode(final.rsplit(b",p=", 1)[1])
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    bad = _replace(final, b"p", base64.b64encode(flipped))
    assert _failure(mech.step(bad)) is FailureKind.INVALID


def test_replayed_final_fails() -> None:
    mech, _, final = _to_final()
    assert isinstance(mech.step(final), Success)
    assert isinstance(mech.step(final), Failure)
    assert isinstance(mech.resume(derive_scram_secret("SCRAM-SHA-256", "pw")), Failure)


def test_final_replayed_into_a_new_exchange_fails() -> None:
    _, _, final = _to_final()
    mech, _, _ = _to_final(ctx=MechanismContext(nonce=_fixed("other")))
    assert _failure(mech.step(final)) is FailureKind.INVALID


def test_failure_ends_the_exchange() -> None:
    mech, _, final = _to_final()
    assert isinstance(mech.step(b"garbage"), Failure)
    assert isinstance(mech.step(final), Failure)


@pytest.mark.parametrize(
    "final",
    [
        b"",
        b"c=biws",
        b"c=biws,r=cnoncesnonce",
        b"r=cnoncesnonce,c=biws,p=AAAA",
        b"c=biws,r=cnoncesnonce,p=not base64!",
        b"c=biws,r=cnoncesnonce,p=AAAA",  # wrong proof length
        b"c=biws,r=cnoncesnonce,x,p=AAAA",
        b"c=,r=cnoncesnonce,p=AAAA",
        b"c=biws,r=cnonce\xffsnonce,p=AAAA",
    ],
)
def test_malformed_final(final: bytes) -> None:
    mech, _, _ = _to_final()
    assert _failure(mech.step(final)) is FailureKind.MALFORMED


@pytest.mark.parametrize("extension", ["x", "1=y", "xy=z", "x="])
def test_final_with_bad_extension_is_malformed(extension: str) -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pw", cnonce="c", final_extensions=extension)
    mech, _, final = _to_final(client=client)
    assert _failure(mech.step(final)) is FailureKind.MALFORMED


def test_final_with_optional_extension_is_accepted() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pw", cnonce="cnonce", final_extensions="x=y")
    mech, _, final = _to_final(client=client)
    assert b",x=y,p=" in final
    assert isinstance(mech.step(final), Success)


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"p=bad name,,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2cer,r=abc",
        b"n,,n=user,r=a\x7fb",
        b"n,,n=user,r=abc,1=x",
        b"n,a=,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,,n=\xc3(,r=abc",
        b"n,,n=us\x00er,r=abc",
        b"n,,n=\x07,r=abc",
        b"n,,n=\xc2\xad,r=abc",  # SASLprep maps it to nothing: empty
        b"n,,n=" + b"u" * 2000 + b",r=abc",
        b"n,,n=user,r=" + b"a" * 2000,
    ],
)
def test_malformed_first(first: bytes) -> None:
    mech = ScramSha256(MechanismContext())
    assert _failure(mech.start(first)) is FailureKind.MALFORMED
    assert isinstance(mech.step(b"n,,n=user,r=abc"), Failure)


def test_first_with_optional_extension_is_accepted() -> None:
    mech = ScramSha256(MechanismContext())
    assert isinstance(mech.start(b"n,,n=user,r=abc,x=ext"), NeedSecret)


def test_empty_initial_response_is_malformed_not_a_challenge() -> None:
    mech = ScramSha256(MechanismContext())
    assert _failure(mech.start(b"")) is FailureKind.MALFORMED


@pytest.mark.parametrize(
    "secret",
    [
        CramMd5Secret(contexts=b"\x00" * 32),
        derive_scram_secret("SCRAM-SHA-1", "pw"),  # SHA-1 keys for a SHA-256 exchange
    ],
)
def test_resume_with_unusable_secret(secret: object) -> None:
    mech = ScramSha256(MechanismContext())
    assert isinstance(mech.start(b"n,,n=user,r=abc"), NeedSecret)
    assert _failure(mech.resume(secret)) is FailureKind.INVALID  # type: ignore[arg-type]


def test_out_of_sequence_calls() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "pw")
    assert isinstance(ScramSha256(MechanismContext()).resume(secret), Failure)
    mech = ScramSha256(MechanismContext())
    assert isinstance(mech.start(None), Challenge)
    assert isinstance(mech.start(None), Failure)
    mech = ScramSha256(MechanismContext())
    assert isinstance(mech.start(b"n,,n=user,r=abc"), NeedSecret)
    assert isinstance(mech.step(b"c=biws,r=abc,p=AAAA"), Failure)  # before resume


def test_failure_reasons_do_not_leak_client_data() -> None:
    mech, _, final = _to_final()
    step = mech.step(_replace(final, b"r", b"SECRETNONCE"))
    assert isinstance(step, Failure) and "SECRETNONCE" not in step.reason
    mech = ScramSha256(MechanismContext())
    step = mech.start(b"n,,n=SECRETUSER\x07,r=abc")
    assert isinstance(step, Failure) and "SECRETUSER" not in step.reason


def test_reprs_hide_secrets() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "pw")
    mech, _, final = _to_final()
    step = mech.step(final)
    assert "v=" not in repr(step)
    assert repr(secret.stored_key) not in repr(secret)
