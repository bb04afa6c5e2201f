"""Dovecot passwd-file parsing: every scheme, names, costs, and bad lines named by number."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
from argon2.low_level import Type
from scramp import ScramMechanism

from smtpgate.config.schema import ImportConfig
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


LIMITS = dataclasses.asdict(ImportConfig())


def parse(path: Path, **limits: int) -> list[Account]:
    return parse_passwd_file(path, {**LIMITS, **limits})


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
    accounts = {account.name: account for account in parse(good_file)}
    assert list(accounts) == [*PASSWORDS, "softhyphen"]  # file order; names SASLprepped
    for name, password in PASSWORDS.items():
        assert verify_account_password(accounts[name], password), name
        assert not verify_account_password(accounts[name], password + "!"), name


def test_where_each_secret_goes(good_file: Path) -> None:
    accounts = {account.name: account for account in parse(good_file)}
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
    [account] = parse(path)
    assert account.scram_sha256 == secret
    assert verify_account_password(account, "pencil")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# nothing\n\n")
    assert parse(path) == []


SECRET_WORD = "Sup3rSecretHash"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"nocolon{SECRET_WORD}", "expected name"),
        (f"u:{SECRET_WORD}", "no {SCHEME}"),
        (f"u:{{MD5-CRYPT}}$1${SECRET_WORD}", "unsupported scheme MD5-CRYPT"),
        (f":{{PLAIN}}{SECRET_WORD}", "empty user name"),
        (f"bad\x07name:{{PLAIN}}{SECRET_WORD}", "control character"),
        (f"bad\u200ename:{{PLAIN}}{SECRET_WORD}", "SASLprep"),
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
        parse(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 4: ")
    assert problem in message
    assert SECRET_WORD not in message
    assert "\n" not in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"ok:{PLAIN}x\nu:{PLAIN}\xff\xfe\n")
    with pytest.raises(PasswdFileError, match=r"line 2: not valid UTF-8"):
        parse(path)


def test_duplicate_names(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("IX:{PLAIN}a\nother:{PLAIN}b\nI\u00adX:{PLAIN}c\n")
    with pytest.raises(PasswdFileError, match=r"line 3: user 'IX' already defined on line 1"):
        parse(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PasswdFileError, match="cannot read"):
        parse(tmp_path / "missing")


# --- names and passwords the mechanisms or the format cannot carry (RFC 4013, RFC 4616)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (" ", "only white space"),
        ("\u3000\u00a0", "only white space"),  # SASLprep maps both to SPACE
        ("a\uff1ab", "':'"),  # FULLWIDTH COLON: NFKC makes it ':'
        ("x" * 256, "256 octets long; at most 255"),
        ("\u00e9" * 128, "256 octets long; at most 255"),  # 128 characters, 256 octets
        ("x" * 5000, "5000 octets long"),
        ("tab\tname", "control character"),
        ("nel\x85name", "control character"),
    ],
)
def test_names_no_mechanism_can_carry_are_refused(tmp_path: Path, name: str, problem: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"ok:{{PLAIN}}x\n{name}:{{PLAIN}}{SECRET_WORD}\n", encoding="utf-8")
    with pytest.raises(PasswdFileError) as info:
        parse(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 2: ") and problem in message
    assert SECRET_WORD not in message
    assert message.isprintable() and len(message) < len(str(path)) + 100  # name not echoed


def test_names_up_to_255_octets_are_kept(tmp_path: Path) -> None:
    names = ["x" * 255, "\u00e9" * 127 + "x", "a b"]
    path = tmp_path / "passwd"
    path.write_text("".join(f"{name}:{{PLAIN}}pw\n" for name in names), encoding="utf-8")
    assert [account.name for account in parse(path)] == names


def test_plain_password_with_nul_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"ok:{{PLAIN}}x\nu:{{PLAIN}}{SECRET_WORD}\x00tail\n")
    with pytest.raises(PasswdFileError) as info:
        parse(path)
    assert "line 2: user 'u': the PLAIN password has a NUL" in str(info.value)
    assert SECRET_WORD not in str(info.value)


# --- work factors: [import] limits (the defaults accept what Dovecot and common tools write)


def argon2_with(argon_type: Type, m: int, t: int, p: int) -> str:
    """A well-formed Argon2 hash string claiming these parameters (never computed)."""
    cheap = cheap_argon2("pw", argon_type)
    return cheap.replace("m=8,t=1,p=1", f"m={m},t={t},p={p}")


def bcrypt_with(cost: int) -> str:
    return f"$2b${cost:02d}${BCRYPT[7:]}"


def sha512_with(rounds: int) -> str:
    return SHA512.replace("$6$", f"$6$rounds={rounds}$", 1)


def scram_with(iterations: int) -> str:
    return dovecot_scram(dataclasses.replace(SCRAM256, iterations=iterations))


DEFAULTS_ACCEPT = [  # what each tool writes by default, or a documented setting
    ("ARGON2ID", argon2_with(Type.ID, 65536, 2, 1)),  # doveadm pw (libsodium interactive)
    ("ARGON2I", argon2_with(Type.I, 32768, 4, 1)),  # doveadm pw (libsodium interactive)
    ("ARGON2I", argon2_with(Type.I, 131072, 6, 1)),  # doveadm pw -r 6 (libsodium moderate)
    ("ARGON2ID", argon2_with(Type.ID, 65536, 3, 4)),  # argon2-cffi, RFC 9106 second option
    ("ARGON2ID", argon2_with(Type.ID, 102400, 2, 8)),  # Django
    ("ARGON2ID", argon2_with(Type.ID, 7168, 5, 1)),  # OWASP / Keycloak
    ("BLF-CRYPT", bcrypt_with(5)),  # Dovecot, htpasswd -B
    ("BLF-CRYPT", bcrypt_with(12)),  # Python bcrypt, Django
    ("SHA512-CRYPT", SHA512),  # glibc and Dovecot: 5000 rounds, implicit
    ("SHA512-CRYPT", sha512_with(656000)),  # libpass / passlib default
    ("SCRAM-SHA-256", scram_with(4096)),  # Dovecot, PostgreSQL, RFC 7677
    ("SCRAM-SHA-256", scram_with(600000)),  # OWASP's PBKDF2-HMAC-SHA256 figure
]


@pytest.mark.parametrize(("scheme", "data"), DEFAULTS_ACCEPT)
def test_default_limits_accept_common_hashes(tmp_path: Path, scheme: str, data: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"u:{{{scheme}}}{data}\n")
    assert len(parse(path)) == 1


OVER = [
    ("ARGON2ID", argon2_with(Type.ID, 1048576, 4, 1), "max_argon2_memory_kib", 1048576),
    ("ARGON2I", argon2_with(Type.I, 65536, 100, 1), "max_argon2_passes", 100),
    ("ARGON2ID", argon2_with(Type.ID, 65536, 2, 4096), "max_argon2_parallelism", 4096),
    ("BLF-CRYPT", bcrypt_with(20), "max_bcrypt_cost", 20),
    ("SHA512-CRYPT", sha512_with(999999999), "max_sha_crypt_rounds", 999999999),
    ("SCRAM-SHA-256", scram_with(10_000_000), "max_scram_iterations", 10_000_000),
]


@pytest.mark.parametrize(("scheme", "data", "key", "amount"), OVER)
def test_costly_hash_is_refused_by_line(
    tmp_path: Path, scheme: str, data: str, key: str, amount: int
) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"ok:{{PLAIN}}x\n# note\nu:{{{scheme}}}{data}\n")
    with pytest.raises(PasswdFileError) as info:
        parse(path)
    message = str(info.value)
    limit = LIMITS[key]
    assert message == (
        f"{path}, line 3: user 'u': {scheme} costs too much to verify: "
        f"{amount} is over import.{key} = {limit}"
    )
    assert data not in message
    assert len(parse(path, **{key: amount})) == 2  # a raised limit lets it in
