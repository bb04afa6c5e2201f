"""Reading Dovecot passwd-files for ``smtpgate user import``.

Theory of operation
-------------------
A passwd-file has one user per line, ``name:{SCHEME}data[:extra:fields...]``
(Dovecot's ``user:password:uid:gid:gecos:home:shell:extra``); we keep the
first two fields and ignore the rest. Blank lines and lines starting with
``#`` are skipped. The scheme decides where the data goes:

- ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, PLAIN: kept as
  the account's ``password_hash`` (``{PLAIN}`` is rehashed to Argon2id by the
  password transition at the first plaintext login);
- SCRAM-SHA-256, SCRAM-SHA-1: Dovecot's ``iter,salt,StoredKey,ServerKey``
  becomes the SCRAM secret;
- CRAM-MD5: 64 hex digits, the HMAC-MD5 contexts.

Parsing is strict and happens before anything is stored: every line is
checked, names are SASLprepped (as every stored user name is), and the first
problem raises ``PasswdFileError`` naming the file and the line, never the
hash or password. Two lines for one (prepared) name are an error too.
"""

from __future__ import annotations

import re
from pathlib import Path

from smtpgate.credentials.base import Account
from smtpgate.credentials.passwords import HASH_SCHEMES, is_well_formed, split_scheme
from smtpgate.sasl.base import CramMd5Secret, ScramSecret, SecretScheme
from smtpgate.sasl.cram_md5 import parse_cram_md5
from smtpgate.sasl.saslprep import SaslPrepError, saslprep
from smtpgate.sasl.scram import parse_dovecot_scram

__all__ = ["IMPORT_SCHEMES", "PasswdFileError", "parse_passwd_file"]

_SCRAM_KEY_BYTES: dict[str, int] = {SecretScheme.SCRAM_SHA_1: 20, SecretScheme.SCRAM_SHA_256: 32}
_CRAM_RE = re.compile(r"[0-9A-Fa-f]{64}")
IMPORT_SCHEMES = HASH_SCHEMES | frozenset(SecretScheme)


class PasswdFileError(ValueError):
    """The passwd-file cannot be imported; the text names the file and line."""


class _LineError(ValueError):
    """A problem with one line; the caller adds the file name and line number."""


def parse_passwd_file(path: Path) -> list[Account]:
    """Every account in the file, in file order; PasswdFileError on the first bad line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PasswdFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    accounts: list[Account] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            account = _parse_line(line)
        except _LineError as exc:
            raise PasswdFileError(f"{path}, line {number}: {exc}") from None
        if account is None:
            continue
        if account.name in first_line:
            raise PasswdFileError(
                f"{path}, line {number}: user {account.name!r} "
                f"already defined on line {first_line[account.name]}"
            )
        first_line[account.name] = number
        accounts.append(account)
    return accounts


def _parse_line(raw: bytes) -> Account | None:
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise _LineError("not valid UTF-8") from None
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    fields = line.split(":")
    if len(fields) < 2:
        raise _LineError("expected name:{SCHEME}password")
    name = _prepare_name(fields[0])
    return _account(name, fields[1])


def _prepare_name(name: str) -> str:
    if not name:
        raise _LineError("empty user name")
    try:
        prepared = saslprep(name)
    except SaslPrepError:
        raise _LineError("the user name contains characters SASLprep prohibits") from None
    if not prepared:
        raise _LineError("empty user name")
    return prepared


def _account(name: str, secret: str) -> Account:
    parts = split_scheme(secret)
    if parts is None:
        raise _LineError(f"user {name!r}: the password field has no {{SCHEME}} prefix")
    scheme, data = parts
    if scheme not in IMPORT_SCHEMES:
        raise _LineError(f"user {name!r}: unsupported scheme {scheme}")
    if scheme in HASH_SCHEMES:
        stored = "{" + scheme + "}" + data
        if not is_well_formed(stored):
            raise _LineError(f"user {name!r}: malformed {scheme} hash")
        return Account(name=name, password_hash=stored)
    if scheme == SecretScheme.CRAM_MD5:
        return Account(name=name, cram_md5=_cram(name, data))
    secret_value = _scram(name, scheme, data)
    if scheme == SecretScheme.SCRAM_SHA_1:
        return Account(name=name, scram_sha1=secret_value)
    return Account(name=name, scram_sha256=secret_value)


def _cram(name: str, data: str) -> CramMd5Secret:
    if _CRAM_RE.fullmatch(data) is None:
        raise _LineError(f"user {name!r}: malformed CRAM-MD5 secret (expected 64 hex digits)")
    try:
        return parse_cram_md5(data)
    except ValueError:
        raise _LineError(f"user {name!r}: malformed CRAM-MD5 secret") from None


def _scram(name: str, scheme: str, data: str) -> ScramSecret:
    problem = f"user {name!r}: malformed {scheme} secret"
    try:
        secret = parse_dovecot_scram(data)
    except ValueError:
        raise _LineError(f"{problem} (expected iterations,salt,StoredKey,ServerKey)") from None
    size = _SCRAM_KEY_BYTES[scheme]
    if len(secret.stored_key) != size or len(secret.server_key) != size:
        raise _LineError(f"{problem} (keys must be {size} bytes)")
    if secret.iterations < 1 or not secret.salt:
        raise _LineError(f"{problem} (bad iteration count or empty salt)")
    return secret
