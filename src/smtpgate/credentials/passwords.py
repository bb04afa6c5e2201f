"""Password hashes and imported secrets: make, verify, parse, and price them.

Theory of operation
-------------------
Stored hashes are Dovecot-style strings, ``{SCHEME}data``. We only ever
*write* one scheme, Argon2id with RFC 9106 section 4's second recommended
parameter set (t=3, m=64 MiB, p=4, 16-byte salt, 32-byte tag). We *read* the
schemes a Dovecot passwd-file may hold, so that imported users can log in.
``SCHEMES`` is the one table of them: how each is parsed into an account's
secret, what verifying it costs (work factors, named by the ``[import]`` limit
that bounds them) and, for password hashes, how a password is checked:

=============  =========================================  =================  =====================
scheme         data                                        verified by        cost bounded
=============  =========================================  =================  =====================
ARGON2ID       ``$argon2id$v=19$m=...``                    argon2-cffi        memory, passes, lanes
ARGON2I        ``$argon2i$v=19$m=...``                     argon2-cffi        memory, passes, lanes
BLF-CRYPT      ``$2a$`` / ``$2b$`` / ``$2y$`` bcrypt       bcrypt             cost
SHA512-CRYPT   ``$6$[rounds=N$]salt$hash``                 libpass            rounds
SHA256-CRYPT   ``$5$[rounds=N$]salt$hash``                 libpass            rounds
PLAIN          the password itself                         hmac.compare       -
SCRAM-SHA-256  ``iterations,salt,StoredKey,ServerKey``     the mechanism      iterations
SCRAM-SHA-1    ``iterations,salt,StoredKey,ServerKey``     the mechanism      iterations
CRAM-MD5       64 hex digits (the HMAC-MD5 contexts)       the mechanism      -
=============  =========================================  =================  =====================

Any hash that is not Argon2id with our parameters ``needs_rehash``: after the
next successful plaintext login the auth service stores a fresh hash.

Passwords are prepared with SASLprep (RFC 4013) before they are hashed or
derived from, so that the same password typed in different Unicode forms
works with every mechanism. A password SASLprep refuses, or one with a NUL
(which SASL PLAIN, RFC 4616, cannot carry), cannot be stored (``ValueError``)
and never verifies (``False``).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from smtpgate.credentials.base import Account, SecretsUpdate
from smtpgate.sasl.base import CramMd5Secret, ScramSecret, SecretScheme
from smtpgate.sasl.cram_md5 import cram_md5_secret, parse_cram_md5
from smtpgate.sasl.saslprep import SaslPrepError, saslprep
from smtpgate.sasl.scram import (
    derive_scram_secret,
    parse_dovecot_scram,
    verify_password_with_scram,
)

if TYPE_CHECKING:
    import argon2

__all__ = [
    "SCHEMES",
    "Scheme",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "parse_stored",
    "secrets_from_password",
    "split_scheme",
    "verify_account_password",
    "verify_dummy",
    "verify_password",
]


# The hashing libraries (argon2-cffi, bcrypt, passlib) are imported with the first hash
# a process computes or checks, not with this module: a server process that has not yet
# seen a login does not hold them (docs/performance.md, "Lean processes").
@functools.cache
def _hasher() -> argon2.PasswordHasher:
    """RFC 9106 section 4, second recommended option: t=3, p=4, m=2^16 KiB, 128-bit salt,
    256-bit tag."""
    import argon2
    from argon2.profiles import RFC_9106_LOW_MEMORY

    return argon2.PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


DEFAULT_SCRAM_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
_SCRAM_SALT_BYTES = 16
_BCRYPT_MAX_BYTES = 72  # crypt_blowfish (Dovecot) ignores the bytes after the 72nd
_SCHEME_RE = re.compile(r"\{([A-Za-z0-9._-]+)\}")
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_CRAM_RE = re.compile(r"[0-9A-Fa-f]{64}")  # the two HMAC-MD5 contexts, Dovecot's form


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
    if "\0" in password:
        raise ValueError("the password contains NUL, which SASL PLAIN (RFC 4616) cannot carry")
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
    return "{ARGON2ID}" + _hasher().hash(prepared)


# ---------------------------------------------------------------- the schemes

Cost = tuple[tuple[str, int], ...]  # (``[import]`` limit key, amount) pairs


@dataclass(frozen=True, slots=True)
class Scheme:
    """One ``{SCHEME}`` we read: what its data becomes, how it is checked, what it costs.

    ``parse`` turns well-formed data into the secret an account stores (ValueError
    otherwise, never quoting the data); ``cost`` reads the work factors of
    well-formed data; ``verify`` (hash schemes only) checks data against a
    SASLprepped password and never raises.
    """

    parse: Callable[[str], SecretsUpdate]
    cost: Callable[[str], Cost]
    verify: Callable[[str, str], bool] | None = None


def _free(data: str) -> Cost:
    return ()


def _hash_scheme(
    name: str,
    well_formed: Callable[[str], bool],
    verify: Callable[[str, str], bool],
    cost: Callable[[str], Cost] = _free,
) -> Scheme:
    def parse(data: str) -> SecretsUpdate:
        if not well_formed(data):
            raise ValueError(f"malformed {name} hash")
        return SecretsUpdate(password_hash="{" + name + "}" + data)

    return Scheme(parse, cost, verify)


def _argon2_scheme(type_name: Literal["ID", "I"]) -> Scheme:
    prefix = f"$argon2{type_name.lower()}$"

    def well_formed(data: str) -> bool:
        import argon2
        from argon2.exceptions import InvalidHashError

        try:
            return argon2.extract_parameters(data).type is argon2.Type[type_name]
        except (InvalidHashError, ValueError):
            return False

    def verify(data: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError
        from argon2.low_level import Type, verify_secret

        try:
            return data.startswith(prefix) and verify_secret(
                data.encode("ascii"), password.encode("utf-8"), Type[type_name]
            )
        except (VerificationError, InvalidHashError, ValueError):
            return False

    def cost(data: str) -> Cost:
        import argon2

        found = argon2.extract_parameters(data)
        return (  # each lane is a thread in argon2's reference code: lanes cost too
            ("max_argon2_memory_kib", found.memory_cost),
            ("max_argon2_passes", found.time_cost),
            ("max_argon2_parallelism", found.parallelism),
        )

    return _hash_scheme(f"ARGON2{type_name}", well_formed, verify, cost)


def _verify_bcrypt(data: str, password: str) -> bool:
    if _BCRYPT_RE.fullmatch(data) is None:
        return False
    # $2a$, $2b$ and $2y$ compute the same hash for passwords of at most 72 bytes.
    normalised = "$2b$" + data[4:]
    import bcrypt  # imported hashes only: not loaded by every server process

    try:
        return bcrypt.checkpw(password.encode("utf-8")[:_BCRYPT_MAX_BYTES], normalised.encode())
    except ValueError:
        return False


def _bcrypt_cost(data: str) -> Cost:
    return (("max_bcrypt_cost", int(data[4:6])),)  # "$2b$12$...": log2 of the rounds


def _sha_crypt_scheme(name: str, handler_name: str) -> Scheme:
    def handler() -> Any:
        # passlib is imported with the first SHA-crypt hash (imported accounts only): it
        # is not loaded by every server process (docs/performance.md, "Lean processes").
        from passlib import hash as passlib_hash

        return getattr(passlib_hash, handler_name)

    def well_formed(data: str) -> bool:
        try:  # a bare "$6$salt" is a config string, not a hash
            return bool(handler().from_string(data).checksum)
        except (ValueError, TypeError):
            return False

    def verify(data: str, password: str) -> bool:
        try:
            return bool(handler().verify(password, data))
        except (ValueError, TypeError):
            return False

    def cost(data: str) -> Cost:  # 5000 rounds when the hash does not say
        return (("max_sha_crypt_rounds", int(handler().from_string(data).rounds)),)

    return _hash_scheme(name, well_formed, verify, cost)


def _parse_plain(data: str) -> SecretsUpdate:
    if "\0" in data:
        raise ValueError("the PLAIN password has a NUL, which SASL PLAIN (RFC 4616) cannot carry")
    if _prepare_query(data) is None:  # it could never log in
        raise ValueError("malformed PLAIN hash (empty, or characters SASLprep prohibits)")
    return SecretsUpdate(password_hash="{PLAIN}" + data)


def _verify_plain(data: str, password: str) -> bool:
    stored = _prepare_query(data)
    if stored is None:
        return False
    return hmac.compare_digest(stored.encode("utf-8"), password.encode("utf-8"))


def _scram_scheme(
    name: str, key_bytes: int, store: Callable[[ScramSecret], SecretsUpdate]
) -> Scheme:
    """Dovecot's SCRAM form; no ``verify``: the mechanisms (and PLAIN via them) check it."""

    def parse(data: str) -> SecretsUpdate:
        problem = f"malformed {name} secret"
        try:
            secret = parse_dovecot_scram(data)
        except ValueError:
            raise ValueError(f"{problem} (expected iterations,salt,StoredKey,ServerKey)") from None
        if len(secret.stored_key) != key_bytes or len(secret.server_key) != key_bytes:
            raise ValueError(f"{problem} (keys must be {key_bytes} bytes)")
        if secret.iterations < 1 or not secret.salt:
            raise ValueError(f"{problem} (bad iteration count or empty salt)")
        return store(secret)

    def cost(data: str) -> Cost:
        return (("max_scram_iterations", parse_dovecot_scram(data).iterations),)

    return Scheme(parse, cost)


def _parse_cram(data: str) -> SecretsUpdate:
    if _CRAM_RE.fullmatch(data) is None:
        raise ValueError("malformed CRAM-MD5 secret (expected 64 hex digits)")
    return SecretsUpdate(cram_md5=parse_cram_md5(data))


SCHEMES: Mapping[str, Scheme] = MappingProxyType(
    {
        "ARGON2ID": _argon2_scheme("ID"),
        "ARGON2I": _argon2_scheme("I"),
        "BLF-CRYPT": _hash_scheme(
            "BLF-CRYPT", lambda d: _BCRYPT_RE.fullmatch(d) is not None, _verify_bcrypt, _bcrypt_cost
        ),
        "SHA512-CRYPT": _sha_crypt_scheme("SHA512-CRYPT", "sha512_crypt"),
        "SHA256-CRYPT": _sha_crypt_scheme("SHA256-CRYPT", "sha256_crypt"),
        "PLAIN": Scheme(_parse_plain, _free, _verify_plain),
        SecretScheme.SCRAM_SHA_256: _scram_scheme(
            SecretScheme.SCRAM_SHA_256, 32, lambda secret: SecretsUpdate(scram_sha256=secret)
        ),
        SecretScheme.SCRAM_SHA_1: _scram_scheme(
            SecretScheme.SCRAM_SHA_1, 20, lambda secret: SecretsUpdate(scram_sha1=secret)
        ),
        SecretScheme.CRAM_MD5: Scheme(_parse_cram, _free),
    }
)


# ---------------------------------------------------------------- verification


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the ``{SCHEME}data`` hash; False otherwise, never raises."""
    parts = split_scheme(stored)
    prepared = _prepare_query(password)
    if parts is None or prepared is None:
        return False
    scheme = SCHEMES.get(parts[0])
    if scheme is None or scheme.verify is None:
        return False
    return scheme.verify(parts[1], prepared)


def needs_rehash(stored: str) -> bool:
    """True unless ``stored`` is an ``{ARGON2ID}`` hash with exactly our parameters."""
    parts = split_scheme(stored)
    if parts is None or parts[0] != "ARGON2ID":
        return True
    from argon2.exceptions import InvalidHashError

    try:
        return _hasher().check_needs_rehash(parts[1])
    except (InvalidHashError, ValueError):
        return True


def parse_stored(stored: str, limits: Mapping[str, int]) -> SecretsUpdate:
    """``{SCHEME}data`` from a passwd-file -> the secret an account stores.

    ValueError, naming the scheme but never the data, if the scheme is unknown, the
    data malformed, or a work factor above its ``limits`` entry (``[import]`` keys).
    """
    parts = split_scheme(stored)
    if parts is None:
        raise ValueError("the password field has no {SCHEME} prefix")
    name, data = parts
    scheme = SCHEMES.get(name)
    if scheme is None:
        raise ValueError(f"unsupported scheme {name}")
    value = scheme.parse(data)
    for key, amount in scheme.cost(data):
        if amount > limits[key]:
            raise ValueError(
                f"{name} costs too much to verify: {amount} is over import.{key} = {limits[key]}"
            )
    return value


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
