"""Stored SCRAM secrets: derive, format, parse, verify and fake them.

Theory of operation
-------------------
RFC 5802 section 3 derives, from a password, salt and iteration count::

    SaltedPassword = Hi(Normalize(password), salt, i)      (PBKDF2-HMAC, RFC 2898)
    ClientKey      = HMAC(SaltedPassword, "Client Key")
    StoredKey      = H(ClientKey)
    ServerKey      = HMAC(SaltedPassword, "Server Key")

and a server keeps only salt, i, StoredKey and ServerKey (``ScramSecret``).
Two text forms exist: RFC 5803 section 3
(``SCRAM-SHA-256$<i>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>``) and
Dovecot's passwd-file form (``{SCRAM-SHA-256}<i>,<b64 salt>,<b64 StoredKey>,
<b64 ServerKey>``).

Normalize is SASLprep with unassigned code points prohibited (RFC 5802
section 2.2). A password SASLprep rejects is used as it is (the PostgreSQL
rule), so such an account still works with clients that do the same.

``fake_scram_secret`` serves unknown users: everything is an HMAC of the
user name under a server key, so repeated attempts see the same salt, and
StoredKey has no known preimage, so no proof verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from smtpgate.sasl.base import ScramSecret, SecretScheme
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = [
    "HASHES",
    "ScramHash",
    "derive_scram_secret",
    "fake_scram_secret",
    "format_rfc5803",
    "parse_dovecot_scram",
    "parse_rfc5803",
    "verify_password_with_scram",
]

DEFAULT_ITERATIONS = 4096  # RFC 5802 section 5.1 / RFC 7677 section 4: at least 4096
MAX_ITERATIONS = 10_000_000  # refuse absurd stored counts (a stored-data DoS)
SALT_LEN = 16


@dataclass(frozen=True, slots=True)
class ScramHash:
    mechanism: SecretScheme
    hashlib_name: str  # "sha256"
    digest_size: int


HASHES: dict[str, ScramHash] = {
    SecretScheme.SCRAM_SHA_1: ScramHash(SecretScheme.SCRAM_SHA_1, "sha1", 20),  # RFC 5802
    SecretScheme.SCRAM_SHA_256: ScramHash(SecretScheme.SCRAM_SHA_256, "sha256", 32),  # RFC 7677
}


def _hash(hash_name: str) -> ScramHash:
    try:
        return HASHES[hash_name.upper()]
    except KeyError:
        raise ValueError("unknown SCRAM hash") from None


def secret_fits(scram_hash: ScramHash, secret: ScramSecret) -> bool:
    """Whether ``secret`` is usable with ``scram_hash``: key sizes, salt, iterations."""
    return (
        len(secret.stored_key) == scram_hash.digest_size
        and len(secret.server_key) == scram_hash.digest_size
        and len(secret.salt) > 0
        and 1 <= secret.iterations <= MAX_ITERATIONS
    )


def _normalize(password: str) -> bytes:
    """RFC 5802 section 2.2 Normalize(); SASLprep rejects -> the password as is."""
    try:
        return saslprep(password).encode("utf-8")
    except SaslPrepError:
        return password.encode("utf-8")


def _keys(scram_hash: ScramHash, salted_password: bytes) -> tuple[bytes, bytes]:
    name = scram_hash.hashlib_name
    client_key = hmac.new(salted_password, b"Client Key", name).digest()
    server_key = hmac.new(salted_password, b"Server Key", name).digest()
    return hashlib.new(name, client_key).digest(), server_key


def derive_scram_secret(
    hash_name: str, password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> ScramSecret:
    """Salt, iterate and split ``password`` into a ScramSecret (RFC 5802 section 3)."""
    scram_hash = _hash(hash_name)
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError("SCRAM iteration count out of range")
    if salt is None:
        salt = secrets.token_bytes(SALT_LEN)
    if not salt:
        raise ValueError("SCRAM salt must not be empty")
    salted = hashlib.pbkdf2_hmac(scram_hash.hashlib_name, _normalize(password), salt, iterations)
    stored_key, server_key = _keys(scram_hash, salted)
    return ScramSecret(
        salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key
    )


def verify_password_with_scram(hash_name: str, secret: ScramSecret, password: str) -> bool:
    """Whether ``password`` derives ``secret`` (a PLAIN login on a SCRAM-only account)."""
    scram_hash = _hash(hash_name)
    if not secret_fits(scram_hash, secret):
        return False
    candidate = derive_scram_secret(hash_name, password, secret.salt, secret.iterations)
    stored_ok = hmac.compare_digest(candidate.stored_key, secret.stored_key)
    server_ok = hmac.compare_digest(candidate.server_key, secret.server_key)
    return stored_ok and server_ok


def fake_scram_secret(
    hash_name: str, username: str, key: bytes, iterations: int = DEFAULT_ITERATIONS
) -> ScramSecret:
    """A stable per-name secret for unknown users that no proof ever matches.

    Pass the same ``iterations`` real accounts use, or the count gives it away.
    """
    scram_hash = _hash(hash_name)
    size = scram_hash.digest_size

    def prf(label: str) -> bytes:
        message = f"smtpgate fake SCRAM\x00{label}\x00{scram_hash.mechanism}\x00{username}"
        return hmac.new(key, message.encode("utf-8", "surrogatepass"), "sha256").digest()

    return ScramSecret(
        salt=prf("salt")[:SALT_LEN],
        iterations=iterations,
        stored_key=prf("stored")[:size],
        server_key=prf("server")[:size],
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("SCRAM secret field is not base64") from None


def _secret_from_fields(
    scram_hash: ScramHash | None, iterations: str, salt: str, stored: str, server: str
) -> ScramSecret:
    if not iterations.isascii() or not iterations.isdigit():
        raise ValueError("SCRAM iteration count is not a number")
    secret = ScramSecret(
        salt=_unb64(salt),
        iterations=int(iterations),
        stored_key=_unb64(stored),
        server_key=_unb64(server),
    )
    candidates = [scram_hash] if scram_hash else list(HASHES.values())
    if not any(secret_fits(h, secret) for h in candidates):
        raise ValueError("SCRAM secret fields have the wrong sizes")
    return secret


def format_rfc5803(hash_name: str, secret: ScramSecret) -> str:
    """RFC 5803 section 3: ``<mech>$<i>:<salt>$<StoredKey>:<ServerKey>``."""
    scram_hash = _hash(hash_name)
    return (
        f"{scram_hash.mechanism}${secret.iterations}:{_b64(secret.salt)}"
        f"${_b64(secret.stored_key)}:{_b64(secret.server_key)}"
    )


def parse_rfc5803(text: str) -> tuple[str, ScramSecret]:
    """Parse the RFC 5803 form; returns (hash name, secret). ValueError on any defect."""
    parts = text.strip().split("$")
    if len(parts) != 3:
        raise ValueError("RFC 5803 secret needs three '$'-separated parts")
    scram_hash = _hash(parts[0])
    head, tail = parts[1].split(":"), parts[2].split(":")
    if len(head) != 2 or len(tail) != 2:
        raise ValueError("RFC 5803 secret needs ':' in both halves")
    return scram_hash.mechanism, _secret_from_fields(scram_hash, *head, *tail)


def parse_dovecot_scram(text: str) -> ScramSecret:
    """Parse ``[{SCRAM-...}]<i>,<salt>,<StoredKey>,<ServerKey>``; ValueError on any defect."""
    text = text.strip()
    scram_hash = None
    if text.startswith("{"):
        scheme, brace, text = text[1:].partition("}")
        if not brace:
            raise ValueError("Dovecot scheme prefix not closed")
        scram_hash = _hash(scheme)
    fields = text.split(",")
    if len(fields) != 4:
        raise ValueError("Dovecot SCRAM secret needs four ','-separated fields")
    return _secret_from_fields(scram_hash, *fields)
