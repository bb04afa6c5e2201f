"""Password hashes: make, verify, and decide when to rehash.

Theory of operation
-------------------
Stored hashes are Dovecot-style strings, ``{SCHEME}data``. We only ever
*write* one scheme, Argon2id with RFC 9106 section 4's second recommended
parameter set (t=3, m=64 MiB, p=4, 16-byte salt, 32-byte tag). We *read* the
schemes a Dovecot passwd-file may hold, so that imported users can log in:

=============  =========================================  ===============
scheme         data                                        library
=============  =========================================  ===============
ARGON2ID       ``$argon2id$v=19$m=...``                    argon2-cffi
ARGON2I        ``$argon2i$v=19$m=...``                     argon2-cffi
BLF-CRYPT      ``$2a$`` / ``$2b$`` / ``$2y$`` bcrypt       bcrypt
SHA512-CRYPT   ``$6$[rounds=N$]salt$hash``                 libpass
SHA256-CRYPT   ``$5$[rounds=N$]salt$hash``                 libpass
PLAIN          the password itself                         hmac.compare_digest
=============  =========================================  ===============

Any hash that is not Argon2id with our parameters ``needs_rehash``: after the
next successful plaintext login the auth service stores a fresh hash.

Passwords are prepared with SASLprep (RFC 4013) before they are hashed or
derived from, so that the same password typed in different Unicode forms
works with every mechanism. A password SASLprep refuses cannot be stored
(``ValueError``) and never verifies (``False``).

An unknown user must cost what a wrong password costs: ``verify_dummy`` runs
one Argon2id verification against a hash made once, on first use.

Everything here is CPU-bound and synchronous; the auth service calls it from
a worker thread. Nothing here logs, and no exception text carries a secret.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from collections.abc import Callable

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type, verify_secret
from argon2.profiles import RFC_9106_LOW_MEMORY
from passlib.hash import sha256_crypt, sha512_crypt

from smtpgate.credentials.base import Account, SecretsUpdate
from smtpgate.sasl.base import CramMd5Secret, ScramSecret, SecretScheme
from smtpgate.sasl.cram_md5 import cram_md5_secret
from smtpgate.sasl.saslprep import SaslPrepError, saslprep
from smtpgate.sasl.scram import derive_scram_secret, verify_password_with_scram

__all__ = [
    "HASH_SCHEMES",
    "dummy_hash",
    "hash_password",
    "is_well_formed",
    "needs_rehash",
    "secrets_from_password",
    "split_scheme",
    "verify_account_password",
    "verify_dummy",
    "verify_password",
]

# RFC 9106 section 4, second recommended option: t=3, p=4, m=2^16 KiB, 128-bit salt, 256-bit tag.
_HASHER = argon2.PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)

DEFAULT_SCRAM_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
_SCRAM_SALT_BYTES = 16
_BCRYPT_MAX_BYTES = 72  # crypt_blowfish (Dovecot) ignores the bytes after the 72nd
_SCHEME_RE = re.compile(r"\{([A-Za-z0-9._-]+)\}")
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def split_scheme(stored: str) -> tuple[str, str] | None:
    """``"{SCHEME}data"`` -> ``("SCHEME", "data")`` (scheme upper-cased); None if no scheme."""
    match = _SCHEME_RE.match(stored)
    if match is None:
        return None
    return match.group(1).upper(), stored[match.end() :]


def _prepare_stored(password: str) -> str:
    """SASLprep for a password about to be stored: refuse what it refuses."""
    if not password:
        raise ValueError("the password is empty")
    try:
        prepared = saslprep(password)
    except SaslPrepError:
        raise ValueError("the password contains characters SASLprep prohibits") from None
    if not prepared:
        raise ValueError("the password is empty after SASLprep")
    return prepared


def _prepare_query(password: str) -> str | None:
    """SASLprep for a candidate password (RFC 4013 section 2.5: a query); None if refused."""
    if not password:
        return None
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except SaslPrepError:
        return None
    return prepared or None


def hash_password(password: str) -> str:
    """A new ``{ARGON2ID}`` hash of the SASLprepped password; ValueError if it can't be stored."""
    return _argon2id(_prepare_stored(password))


def _argon2id(prepared: str) -> str:
    return "{ARGON2ID}" + _HASHER.hash(prepared)


# ---------------------------------------------------------------- verification


def _verify_argon2(argon_type: Type, prefix: str) -> Callable[[str, str], bool]:
    def verify(data: str, password: str) -> bool:
        if not data.startswith(prefix):
            return False
        try:
            return verify_secret(data.encode("ascii"), password.encode("utf-8"), argon_type)
        except (VerificationError, InvalidHashError, ValueError):
            return False

    return verify


def _verify_bcrypt(data: str, password: str) -> bool:
    if _BCRYPT_RE.fullmatch(data) is None:
        return False
    # $2a$, $2b$ and $2y$ compute the same hash for passwords of at most 72 bytes.
    normalised = "$2b$" + data[4:]
    try:
        return bcrypt.checkpw(password.encode("utf-8")[:_BCRYPT_MAX_BYTES], normalised.encode())
    except ValueError:
        return False


def _verify_passlib(handler: object) -> Callable[[str, str], bool]:
    def verify(data: str, password: str) -> bool:
        try:
            return bool(handler.verify(password, data))  # type: ignore[attr-defined]
        except (ValueError, TypeError):
            return False

    return verify


def _verify_plain(data: str, password: str) -> bool:
    stored = _prepare_query(data)
    if stored is None:
        return False
    return hmac.compare_digest(stored.encode("utf-8"), password.encode("utf-8"))


_VERIFIERS: dict[str, Callable[[str, str], bool]] = {
    "ARGON2ID": _verify_argon2(Type.ID, "$argon2id$"),
    "ARGON2I": _verify_argon2(Type.I, "$argon2i$"),
    "BLF-CRYPT": _verify_bcrypt,
    "SHA512-CRYPT": _verify_passlib(sha512_crypt),
    "SHA256-CRYPT": _verify_passlib(sha256_crypt),
    "PLAIN": _verify_plain,
}
HASH_SCHEMES = frozenset(_VERIFIERS)


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the ``{SCHEME}data`` hash; False otherwise, never raises."""
    parts = split_scheme(stored)
    prepared = _prepare_query(password)
    if parts is None or prepared is None:
        return False
    verifier = _VERIFIERS.get(parts[0])
    if verifier is None:
        return False
    return verifier(parts[1], prepared)


def needs_rehash(stored: str) -> bool:
    """True unless ``stored`` is an ``{ARGON2ID}`` hash with exactly our parameters."""
    parts = split_scheme(stored)
    if parts is None or parts[0] != "ARGON2ID":
        return True
    try:
        return _HASHER.check_needs_rehash(parts[1])
    except (InvalidHashError, ValueError):
        return True


def is_well_formed(stored: str) -> bool:
    """Does ``stored`` parse as a hash of a scheme we verify? (Checks form, not password.)"""
    parts = split_scheme(stored)
    if parts is None or parts[0] not in HASH_SCHEMES:
        return False
    scheme, data = parts
    if scheme in ("ARGON2ID", "ARGON2I"):
        return _argon2_well_formed(data, Type.ID if scheme == "ARGON2ID" else Type.I)
    if scheme == "BLF-CRYPT":
        return _BCRYPT_RE.fullmatch(data) is not None
    if scheme == "SHA512-CRYPT":
        return _passlib_well_formed(sha512_crypt, data)
    if scheme == "SHA256-CRYPT":
        return _passlib_well_formed(sha256_crypt, data)
    return bool(data)  # PLAIN


def _argon2_well_formed(data: str, argon_type: Type) -> bool:
    try:
        return argon2.extract_parameters(data).type is argon_type
    except (InvalidHashError, ValueError):
        return False


def _passlib_well_formed(handler: object, data: str) -> bool:
    try:
        parsed = handler.from_string(data)  # type: ignore[attr-defined]
    except (ValueError, TypeError):
        return False
    return bool(parsed.checksum)  # a bare "$6$salt" is a config string, not a hash


# ---------------------------------------------------------------- unknown users


@functools.cache
def dummy_hash() -> str:
    """An Argon2id hash of a random password, made on first use (about 50-100 ms)."""
    return hash_password(secrets.token_urlsafe(24))


def verify_dummy(password: str) -> None:
    """Spend what verifying a real Argon2id hash costs; the answer is always no."""
    verify_password(dummy_hash(), password or "-")


# ---------------------------------------------------------------- account secrets


def secrets_from_password(
    password: str, *, cram_md5: bool, iterations: int = DEFAULT_SCRAM_ITERATIONS
) -> SecretsUpdate:
    """Everything we store for a password: Argon2id hash, SCRAM secrets, CRAM-MD5 if asked.

    SCRAM salts are 16 random bytes each; ValueError if the password can't be stored.
    """
    prepared = _prepare_stored(password)
    return SecretsUpdate(
        password_hash=_argon2id(prepared),
        scram_sha1=derive_scram_secret(
            SecretScheme.SCRAM_SHA_1, prepared, secrets.token_bytes(_SCRAM_SALT_BYTES), iterations
        ),
        scram_sha256=derive_scram_secret(
            SecretScheme.SCRAM_SHA_256, prepared, secrets.token_bytes(_SCRAM_SALT_BYTES), iterations
        ),
        cram_md5=cram_md5_secret(prepared) if cram_md5 else None,
    )


def verify_account_password(account: Account, password: str) -> bool:
    """Check a plaintext password against the strongest secret the account holds.

    Order: the password hash; else SCRAM-SHA-256; else SCRAM-SHA-1; else the
    CRAM-MD5 contexts. False if the account holds none of them.
    """
    if account.password_hash is not None:
        return verify_password(account.password_hash, password)
    prepared = _prepare_query(password)
    if prepared is None:
        return False
    if account.scram_sha256 is not None:
        return _scram_ok(SecretScheme.SCRAM_SHA_256, account.scram_sha256, prepared)
    if account.scram_sha1 is not None:
        return _scram_ok(SecretScheme.SCRAM_SHA_1, account.scram_sha1, prepared)
    if account.cram_md5 is not None:
        return _cram_ok(account.cram_md5, prepared)
    return False


def _scram_ok(mechanism: str, secret: ScramSecret, prepared: str) -> bool:
    try:
        return verify_password_with_scram(mechanism, secret, prepared)
    except ValueError:
        return False


def _cram_ok(stored: CramMd5Secret, prepared: str) -> bool:
    candidate = cram_md5_secret(prepared)
    return hmac.compare_digest(candidate.contexts, stored.contexts)
