"""Reading Dovecot passwd-files for ``smtpgate user import``, and the user-name rules.

Theory of operation
-------------------
A passwd-file has one user per line, ``name:{SCHEME}data[:extra:fields...]``
(Dovecot's ``user:password:uid:gid:gecos:home:shell:extra``); we keep the
first two fields and ignore the rest. Blank lines and lines starting with
``#`` are skipped. The scheme decides where the data goes and what it may
cost: ``passwords.SCHEMES`` is the table (``parse_stored``), and ``limits``
(the ``[import]`` config table) bounds each hash's work factors, so that one
imported hash cannot make every AUTH for it spend seconds or gigabytes.

Parsing is strict and happens before anything is stored: every line is
checked, names are SASLprepped and must be names every mechanism and this
format can carry (``prepare_new_name``), and the first problem raises
``PasswdFileError`` naming the file and the line, never the hash or password.
Two lines for one (prepared) name are an error too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path

from smtpgate.credentials.base import Account
from smtpgate.credentials.passwords import parse_stored
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = ["MAX_NAME_OCTETS", "PasswdFileError", "parse_passwd_file", "prepare_name"]

# RFC 4616 section 2: a PLAIN authcid is only sure to be accepted up to 255 octets.
MAX_NAME_OCTETS = 255


class PasswdFileError(ValueError):
    """The passwd-file cannot be imported; the text names the file and line."""


def prepare_name(name: str) -> str:
    """The stored form of an existing user's name (SASLprep); ValueError if it has none."""
    try:
        prepared = saslprep(name)
    except SaslPrepError:
        raise ValueError("the user name contains characters SASLprep prohibits") from None
    if not prepared:
        raise ValueError("the user name is empty")
    return prepared


def prepare_new_name(name: str) -> str:
    """``prepare_name``, refusing names the mechanisms or a passwd-file cannot carry.

    Control characters and ``:`` (the passwd-file separator) are checked after
    SASLprep too, since NFKC maps e.g. U+FF1A FULLWIDTH COLON to ``:``.
    """
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise ValueError("the user name contains a control character")
    prepared = prepare_name(name)
    if not prepared.strip():
        raise ValueError("the user name is only white space")
    if ":" in prepared:
        raise ValueError("the user name contains ':', which a passwd-file cannot carry")
    size = len(prepared.encode("utf-8"))
    if size > MAX_NAME_OCTETS:
        raise ValueError(f"the user name is {size} octets long; at most {MAX_NAME_OCTETS}")
    return prepared


def parse_passwd_file(path: Path, limits: Mapping[str, int]) -> list[Account]:
    """Every account in the file, in file order; PasswdFileError on the first bad line.

    ``limits`` maps ``[import]`` keys (``max_bcrypt_cost``, ...) to their values.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PasswdFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    accounts: list[Account] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            account = _parse_line(line, limits)
        except ValueError as exc:
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


def _parse_line(raw: bytes, limits: Mapping[str, int]) -> Account | None:
    """One line's account, None for a blank or comment line; ValueError without secrets."""
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    fields = line.split(":")
    if len(fields) < 2:
        raise ValueError("expected name:{SCHEME}password")
    if not fields[0]:
        raise ValueError("empty user name")
    name = prepare_new_name(fields[0])
    try:
        secret = parse_stored(fields[1], limits)
    except ValueError as exc:
        raise ValueError(f"user {name!r}: {exc}") from None
    return Account(
        name=name,
        password_hash=secret.password_hash,
        scram_sha1=secret.scram_sha1,
        scram_sha256=secret.scram_sha256,
        cram_md5=secret.cram_md5,
    )
