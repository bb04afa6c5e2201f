"""Password schemes, rehash detection, derived secrets, account verification."""

from __future__ import annotations

import dataclasses
import hmac
import re
import time

import pytest
from argon2.low_level import Type, hash_secret
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramMechanism

from smtpgate.config.schema import ImportConfig
from smtpgate.credentials import passwords
from smtpgate.credentials.base import Account, SecretsUpdate
from smtpgate.credentials.passwords import (
    dummy_hash,
    hash_password,
    needs_rehash,
    parse_stored,
    secrets_from_password,
    split_scheme,
    verify_account_password,
    verify_dummy,
    verify_password,
)
from smtpgate.sasl.cram_md5 import cram_md5_digest, cram_md5_secret
from smtpgate.sasl.scram import derive_scram_secret

# Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" test vectors (also glibc's).
SHA512_VECTORS = [
    (
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBF"
        "dcbYEdFCoEOfaS35inz1",
    ),
    (
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/U"
        "rjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
]
SHA256_VECTORS = [
    ("Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
]
# crypt_blowfish / OpenBSD test vectors.
BCRYPT_VECTORS = [
    ("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
    ("U*U*", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK"),
    ("U*U*U", "$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a"),
]
# The Argon2 reference implementation's test vectors (version 0x13, "password", "somesalt").
ARGON2I_VECTOR = (
    "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA"
)
ARGON2ID_VECTOR = (
    "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
)


def cheap_argon2(password: str, argon_type: Type) -> str:
    """A fast Argon2 hash (m=8 KiB, t=1) for tests of wrong passwords."""
    return hash_secret(
        password.encode(),
        b"0123456789abcdef",
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_len=32,
        type=argon_type,
    ).decode()


# ---------------------------------------------------------------- schemes


@pytest.mark.parametrize(("password", "data"), SHA512_VECTORS)
def test_sha512_crypt(password: str, data: str) -> None:
    assert verify_password("{SHA512-CRYPT}" + data, password)
    assert not verify_password("{SHA512-CRYPT}" + data, password + "x")


@pytest.mark.parametrize(("password", "data"), SHA256_VECTORS)
def test_sha256_crypt(password: str, data: str) -> None:
    assert verify_password("{SHA256-CRYPT}" + data, password)
    assert not verify_password("{SHA256-CRYPT}" + data, "hello world!")


def test_sha_crypt_schemes_are_not_interchangeable() -> None:
    assert not verify_password("{SHA256-CRYPT}" + SHA512_VECTORS[0][1], "Hello world!")


@pytest.mark.parametrize(("password", "data"), BCRYPT_VECTORS)
@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_blf_crypt_every_prefix(password: str, data: str, prefix: str) -> None:
    stored = "{BLF-CRYPT}" + prefix + data[4:]
    assert verify_password(stored, password)
    assert not verify_password(stored, password + "U")


def test_blf_crypt_truncates_at_72_bytes_like_dovecot() -> None:
    import bcrypt

    base = "p" * 72
    stored = "{BLF-CRYPT}" + bcrypt.hashpw(base.encode(), bcrypt.gensalt(4)).decode()
    assert verify_password(stored, base + "anything after byte 72")
    assert not verify_password(stored, base[:71])


def test_argon2i_reference_vector() -> None:
    assert verify_password("{ARGON2I}" + ARGON2I_VECTOR, "password")


def test_argon2id_reference_vector() -> None:
    assert verify_password("{ARGON2ID}" + ARGON2ID_VECTOR, "password")


@pytest.mark.parametrize(("scheme", "argon_type"), [("ARGON2I", Type.I), ("ARGON2ID", Type.ID)])
def test_argon2_wrong_password_and_wrong_type(scheme: str, argon_type: Type) -> None:
    data = cheap_argon2("secret", argon_type)
    assert verify_password("{" + scheme + "}" + data, "secret")
    assert not verify_password("{" + scheme + "}" + data, "Secret")
    other = "ARGON2I" if scheme == "ARGON2ID" else "ARGON2ID"
    assert not verify_password("{" + other + "}" + data, "secret")


def test_plain() -> None:
    assert verify_password("{PLAIN}open sesame", "open sesame")
    assert not verify_password("{PLAIN}open sesame", "open sesame ")
    assert not verify_password("{PLAIN}open sesame", "")


def test_scheme_names_are_case_insensitive() -> None:
    assert verify_password("{plain}pw", "pw")
    assert split_scheme("{blf-crypt}$2b$...") == ("BLF-CRYPT", "$2b$...")


def test_candidate_is_saslprepped() -> None:
    # RFC 4013 section 3: SOFT HYPHEN maps to nothing, NO-BREAK SPACE to SPACE.
    assert verify_password("{PLAIN}IX", "I\u00adX")
    assert verify_password("{PLAIN}a b", "a\u00a0b")
    assert not verify_password("{PLAIN}a\x07b", "a\x07b")  # prohibited: never verifies


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "no scheme",
        "{",
        "{}x",
        "{UNKNOWN}x",
        "{MD5-CRYPT}$1$salt$hash",
        "{ARGON2ID}",
        "{ARGON2ID}$argon2id$garbage",
        "{ARGON2I}$argon2i$v=19$m=8,t=1,p=1$!!$!!",
        "{BLF-CRYPT}$2b$05$short",
        "{BLF-CRYPT}$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
        "{SHA512-CRYPT}$6$",
        "{SHA512-CRYPT}$6$rounds=0$salt$x",
        "{SHA256-CRYPT}not-a-hash",
    ],
)
def test_garbage_is_false_not_an_exception(stored: str) -> None:
    assert verify_password(stored, "U*U") is False


@given(st.text(max_size=80), st.text(max_size=40))
def test_verify_never_raises(stored: str, password: str) -> None:
    assert verify_password(stored, password) in (True, False)
    assert verify_password("{BLF-CRYPT}" + stored, password) in (True, False)
    assert verify_password("{SHA512-CRYPT}" + stored, password) in (True, False)


# ---------------------------------------------------------------- hashing, rehash


def test_hash_password_uses_rfc9106_second_parameter_set() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$")
    salt_b64, tag_b64 = stored.split("$")[-2:]
    assert len(salt_b64) == 22  # 16 bytes, unpadded base64
    assert len(tag_b64) == 43  # 32 bytes
    assert not needs_rehash(stored)
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsE")


def test_hash_password_saslpreps() -> None:
    assert verify_password(hash_password("I\u00adX"), "IX")


@pytest.mark.parametrize("password", ["", "bell\x07", "\u00ad"])
def test_hash_password_refuses_unpreparable_password(password: str) -> None:
    with pytest.raises(ValueError) as info:
        hash_password(password)
    if password:
        assert password not in str(info.value)


@pytest.mark.parametrize(
    "stored",
    [
        "{ARGON2ID}" + ARGON2ID_VECTOR,  # other parameters
        "{ARGON2I}" + ARGON2I_VECTOR,
        "{BLF-CRYPT}" + BCRYPT_VECTORS[0][1],
        "{SHA512-CRYPT}" + SHA512_VECTORS[0][1],
        "{SHA256-CRYPT}" + SHA256_VECTORS[0][1],
        "{PLAIN}pw",
        "{ARGON2ID}garbage",
        "garbage",
    ],
)
def test_needs_rehash(stored: str) -> None:
    assert needs_rehash(stored)


def test_needs_rehash_false_for_ours_even_with_lowercase_scheme() -> None:
    ours = hash_password("pw")
    assert not needs_rehash("{argon2id}" + ours.removeprefix("{ARGON2ID}"))


LIMITS = dataclasses.asdict(ImportConfig())


def test_parse_stored_checks_form() -> None:
    for stored in (
        "{SHA512-CRYPT}" + SHA512_VECTORS[1][1],
        "{BLF-CRYPT}" + BCRYPT_VECTORS[0][1],
        "{ARGON2I}" + ARGON2I_VECTOR,
    ):
        assert parse_stored(stored, LIMITS) == SecretsUpdate(password_hash=stored)
    for stored, problem in (
        ("{ARGON2ID}" + ARGON2I_VECTOR, "malformed ARGON2ID"),
        ("{SHA256-CRYPT}" + SHA512_VECTORS[0][1], "malformed SHA256-CRYPT"),
        ("{PLAIN}", "malformed PLAIN"),
        ("{SCRAM-SHA-256}4096,x,y,z", "malformed SCRAM-SHA-256"),
        ("{MD5}x", "unsupported scheme MD5"),
        ("no-scheme", "no {SCHEME}"),
    ):
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_stored(stored, LIMITS)


# One well-formed sample per scheme; between them they name every [import] limit.
SAMPLES = {
    "ARGON2ID": ARGON2ID_VECTOR,
    "ARGON2I": ARGON2I_VECTOR,
    "BLF-CRYPT": BCRYPT_VECTORS[0][1],
    "SHA512-CRYPT": SHA512_VECTORS[1][1],
    "SHA256-CRYPT": SHA256_VECTORS[1][1],
    "PLAIN": "pw",
    "SCRAM-SHA-256": "4096,c2FsdA==," + "A" * 43 + "=," + "A" * 43 + "=",
    "SCRAM-SHA-1": "4096,c2FsdA==," + "A" * 27 + "=," + "A" * 27 + "=",
    "CRAM-MD5": "0" * 64,
}


def test_one_table_of_schemes_and_their_costs() -> None:
    assert set(passwords.SCHEMES) == set(SAMPLES)
    named: dict[str, int] = {}
    for name, data in SAMPLES.items():
        parse_stored("{" + name + "}" + data, LIMITS)
        named.update(passwords.SCHEMES[name].cost(data))
    assert set(named) == set(LIMITS)  # every cost has its limit, every limit a cost
    assert named["max_sha_crypt_rounds"] == 10000  # SHA256_VECTORS[1]: rounds=10000
    assert named["max_scram_iterations"] == 4096
    assert (named["max_argon2_memory_kib"], named["max_argon2_passes"]) == (65536, 2)


def test_parse_stored_names_the_limit_not_the_hash() -> None:
    stored = "{ARGON2I}" + ARGON2I_VECTOR  # m=65536 KiB
    with pytest.raises(ValueError) as info:
        parse_stored(stored, {**LIMITS, "max_argon2_memory_kib": 65535})
    assert str(info.value) == (
        "ARGON2I costs too much to verify: 65536 is over import.max_argon2_memory_kib = 65535"
    )
    assert parse_stored(stored, {**LIMITS, "max_argon2_memory_kib": 65536}).password_hash == stored


@pytest.mark.parametrize("password", ["a\x00b", "\x00"])
def test_nul_is_refused_for_storage_and_import(password: str) -> None:
    with pytest.raises(ValueError, match=r"NUL.*RFC 4616"):
        hash_password(password)
    with pytest.raises(ValueError, match=r"NUL.*RFC 4616"):
        parse_stored("{PLAIN}" + password, LIMITS)


def test_dummy_hash_is_made_once_and_never_matches() -> None:
    assert dummy_hash() is dummy_hash()
    assert not needs_rehash(dummy_hash())
    started = time.perf_counter()
    verify_dummy("anything")
    verify_dummy("")  # must not raise, and must cost the same
    assert time.perf_counter() - started > 0.01  # it really ran Argon2id with m=64 MiB


# ---------------------------------------------------------------- derived secrets


@pytest.mark.parametrize(
    ("mechanism", "attribute"),
    [("SCRAM-SHA-1", "scram_sha1"), ("SCRAM-SHA-256", "scram_sha256")],
)
def test_scram_secrets_match_scramp(
    mechanism: str, attribute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "_argon2id", lambda password: "{ARGON2ID}stub")
    update = secrets_from_password("pencil", cram_md5=False, iterations=4097)
    secret = getattr(update, attribute)
    assert len(secret.salt) == 16
    salt, stored_key, server_key, iterations = ScramMechanism(mechanism).make_auth_info(
        "pencil", iteration_count=4097, salt=secret.salt
    )
    assert (secret.salt, secret.stored_key, secret.server_key, secret.iterations) == (
        salt,
        stored_key,
        server_key,
        iterations,
    )


def test_secrets_from_password_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_argon2id", lambda password: "{ARGON2ID}" + password)
    update = secrets_from_password("I\u00adX", cram_md5=True)
    assert update.password_hash == "{ARGON2ID}IX"  # prepared before hashing
    assert update.scram_sha1 is not None and update.scram_sha256 is not None
    assert update.scram_sha1.iterations == update.scram_sha256.iterations == 4096
    assert update.scram_sha1.salt != update.scram_sha256.salt
    assert update.cram_md5 == cram_md5_secret("IX")
    challenge = b"<1896.697170952@postoffice.example.net>"
    assert cram_md5_digest(update.cram_md5, challenge) == hmac.digest(b"IX", challenge, "md5")
    again = secrets_from_password("IX", cram_md5=False)
    assert again.cram_md5 is None
    assert again.scram_sha256 is not None
    assert again.scram_sha256.salt != update.scram_sha256.salt


def test_secrets_from_password_refuses_unpreparable() -> None:
    with pytest.raises(ValueError, match="SASLprep"):
        secrets_from_password("a\x07b", cram_md5=True)


# ---------------------------------------------------------------- accounts


def test_account_password_hash_wins() -> None:
    account = Account(
        name="u",
        password_hash="{PLAIN}hash-password",
        scram_sha256=derive_scram_secret("SCRAM-SHA-256", "scram-password", b"s" * 16, 4096),
    )
    assert verify_account_password(account, "hash-password")
    assert not verify_account_password(account, "scram-password")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_account_scram_only(mechanism: str) -> None:
    secret = derive_scram_secret(mechanism, "pencil", b"s" * 16, 4096)
    if mechanism == "SCRAM-SHA-1":
        account = Account(name="u", scram_sha1=secret)
    else:
        account = Account(name="u", scram_sha256=secret)
    assert verify_account_password(account, "pencil")
    assert not verify_account_password(account, "Pencil")
    assert not verify_account_password(account, "")


def test_account_sha256_preferred_over_sha1() -> None:
    account = Account(
        name="u",
        scram_sha1=derive_scram_secret("SCRAM-SHA-1", "one", b"s" * 16, 4096),
        scram_sha256=derive_scram_secret("SCRAM-SHA-256", "two", b"s" * 16, 4096),
    )
    assert verify_account_password(account, "two")
    assert not verify_account_password(account, "one")


def test_account_cram_md5_only() -> None:
    account = Account(name="u", cram_md5=cram_md5_secret("tanstaaftanstaaf"))
    assert verify_account_password(account, "tanstaaftanstaaf")
    assert not verify_account_password(account, "tanstaaf")


def test_account_without_secrets() -> None:
    assert not verify_account_password(Account(name="u"), "anything")


def test_reprs_never_show_secrets() -> None:
    secret = derive_scram_secret("SCRAM-SHA-256", "pencil", b"S3CRETSALT-bytes", 4096)
    cram = cram_md5_secret("pencil")
    account = Account(
        name="alice",
        password_hash="{PLAIN}hunter2-secret",
        scram_sha1=secret,
        scram_sha256=secret,
        cram_md5=cram,
    )
    update = SecretsUpdate(
        password_hash="{PLAIN}hunter2-secret", scram_sha256=secret, cram_md5=cram
    )
    for text in (repr(account), str(account), repr(update), repr(secret), repr(cram)):
        assert "hunter2" not in text
        assert "S3CRET" not in text
        assert secret.stored_key.hex() not in text
        assert repr(secret.stored_key) not in text
        assert cram.contexts.hex() not in text
    assert "alice" in repr(account)
