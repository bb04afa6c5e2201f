"""Dovecot passwd-file parsing: every scheme, and bad lines named by number."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from argon2.low_level import Type
from scramp import ScramMechanism

from smtpgate.credentials.base import Account
from smtpgate.credentials.passwd_file import PasswdFileError, parse_passwd_file
from smtpgate.credentials.passwords import verify_account_password
from smtpgate.sasl.base import ScramSecret
from smtpgate.sasl.cram_md5 import cram_md5_secret, format_cram_md5
from smtpgate.sasl.scram import derive_scram_secret
from tests.credentials.test_passwords import cheap_argon2

BCRYPT = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"  # "U*U"
SHA512 = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBF"
    "dcbYEdFCoEOfaS35inz1"
)  # "Hello world!"
SHA256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"  # "Hello world!"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dovecot_scram(secret: ScramSecret) -> str:
    return (
        f"{secret.iterations},{b64(secret.salt)},{b64(secret.stored_key)},{b64(secret.server_key)}"
    )


SCRAM256 = derive_scram_secret("SCRAM-SHA-256", "scram256-pw", b"s" * 16, 4096)
SCRAM1 = derive_scram_secret("SCRAM-SHA-1", "scram1-pw", b"t" * 16, 4096)
CRAM = cram_md5_secret("cram-pw")
ARGON2ID = cheap_argon2("argon2id-pw", Type.ID)
ARGON2I = cheap_argon2("argon2i-pw", Type.I)

GOOD_FILE = f"""\
# Dovecot passwd-file exported for the migration
argon-id:{{ARGON2ID}}{ARGON2ID}:1000:1000::/home/a::userdb_quota_rule=*:storage=1G

argon-i:{{ARGON2I}}{ARGON2I}
bcrypt:{{BLF-CRYPT}}{BCRYPT}:::
sha512:{{SHA512-CRYPT}}{SHA512}
   # an indented comment
sha256:{{sha256-crypt}}{SHA256}\r
scram256@example.org:{{SCRAM-SHA-256}}{dovecot_scram(SCRAM256)}
scram1:{{SCRAM-SHA-1}}{dovecot_scram(SCRAM1)}
cram:{{CRAM-MD5}}{format_cram_md5(CRAM)}
plain:{{PLAIN}}plain pw with spaces
soft\u00adhyphen:{{PLAIN}}x
"""

PASSWORDS = {
    "argon-id": "argon2id-pw",
    "argon-i": "argon2i-pw",
    "bcrypt": "U*U",
    "sha512": "Hello world!",
    "sha256": "Hello world!",
    "scram256@example.org": "scram256-pw",
    "scram1": "scram1-pw",
    "cram": "cram-pw",
    "plain": "plain pw with spaces",
}


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    path.write_text(GOOD_FILE, encoding="utf-8")
    return path


def test_every_scheme(good_file: Path) -> None:
    accounts = {account.name: account for account in parse_passwd_file(good_file)}
    assert list(accounts) == [*PASSWORDS, "softhyphen"]  # file order; names SASLprepped
    for name, password in PASSWORDS.items():
        assert verify_account_password(accounts[name], password), name
        assert not verify_account_password(accounts[name], password + "!"), name


def test_where_each_secret_goes(good_file: Path) -> None:
    accounts = {account.name: account for account in parse_passwd_file(good_file)}
    assert accounts["sha256"].password_hash == "{SHA256-CRYPT}" + SHA256  # scheme upper-cased
    assert accounts["plain"].password_hash == "{PLAIN}plain pw with spaces"
    assert accounts["scram256@example.org"] == Account(
        name="scram256@example.org", scram_sha256=SCRAM256
    )
    assert accounts["scram1"] == Account(name="scram1", scram_sha1=SCRAM1)
    assert accounts["cram"] == Account(name="cram", cram_md5=CRAM)
    for account in accounts.values():
        assert account.allowed_mechanisms is None
        assert account.may_act_as == frozenset()


def test_scram_import_matches_scramp(tmp_path: Path) -> None:
    salt, stored, server, iterations = ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "pencil", iteration_count=8192
    )
    secret = ScramSecret(salt=salt, iterations=iterations, stored_key=stored, server_key=server)
    path = tmp_path / "passwd"
    path.write_text(f"u:{{SCRAM-SHA-256}}{dovecot_scram(secret)}\n")
    [account] = parse_passwd_file(path)
    assert account.scram_sha256 == secret
    assert verify_account_password(account, "pencil")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# nothing\n\n")
    assert parse_passwd_file(path) == []


SECRET_WORD = "Sup3rSecretHash"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"nocolon{SECRET_WORD}", "expected name"),
        (f"u:{SECRET_WORD}", "no {SCHEME}"),
        (f"u:{{MD5-CRYPT}}$1${SECRET_WORD}", "unsupported scheme MD5-CRYPT"),
        (f":{{PLAIN}}{SECRET_WORD}", "empty user name"),
        (f"bad\x07name:{{PLAIN}}{SECRET_WORD}", "SASLprep"),
        ("u:{PLAIN}", "malformed PLAIN"),
        (f"u:{{BLF-CRYPT}}$2b$05${SECRET_WORD}", "malformed BLF-CRYPT"),
        (f"u:{{SHA512-CRYPT}}$6${SECRET_WORD}", "malformed SHA512-CRYPT"),
        (f"u:{{SHA256-CRYPT}}{SHA512}", "malformed SHA256-CRYPT"),
        (f"u:{{ARGON2ID}}{ARGON2I}", "malformed ARGON2ID"),
        (f"u:{{ARGON2I}}$argon2i${SECRET_WORD}", "malformed ARGON2I"),
        (f"u:{{CRAM-MD5}}{SECRET_WORD}", "malformed CRAM-MD5"),
        (f"u:{{CRAM-MD5}}{format_cram_md5(CRAM)}00", "malformed CRAM-MD5"),
        (f"u:{{SCRAM-SHA-256}}{SECRET_WORD}", "malformed SCRAM-SHA-256"),
        (f"u:{{SCRAM-SHA-256}}{dovecot_scram(SCRAM1)}", "keys must be 32 bytes"),
        (f"u:{{SCRAM-SHA-1}}{dovecot_scram(SCRAM256)}", "keys must be 20 bytes"),
    ],
)
def test_bad_line_is_named_without_its_secret(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"# header\nok:{{PLAIN}}fine\n\n{line}\nlater:{{PLAIN}}x\n")
    with pytest.raises(PasswdFileError) as info:
        parse_passwd_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 4: ")
    assert problem in message
    assert SECRET_WORD not in message
    assert "\n" not in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"ok:{PLAIN}x\nu:{PLAIN}\xff\xfe\n")
    with pytest.raises(PasswdFileError, match=r"line 2: not valid UTF-8"):
        parse_passwd_file(path)


def test_duplicate_names(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("IX:{PLAIN}a\nother:{PLAIN}b\nI\u00adX:{PLAIN}c\n")
    with pytest.raises(PasswdFileError, match=r"line 3: user 'IX' already defined on line 1"):
        parse_passwd_file(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PasswdFileError, match="cannot read"):
        parse_passwd_file(tmp_path / "missing")
