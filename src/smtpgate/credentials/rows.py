"""How an account is stored as one row of text and numbers: the SQLite and PostgreSQL
stores share these columns and this format (``credentials/sqlite.py``,
``credentials/postgres.py``).

Secrets are text: SCRAM ones in RFC 5803's ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:
<ServerKey>`` form, CRAM-MD5's as ``sasl.cram_md5`` formats it; sets of names are
comma-separated, sorted; dates ISO 8601. A row that does not parse is a
``StoreUnavailable`` naming the user, never a half-read account.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from smtpgate.credentials.base import Account, SecretsUpdate, StoreUnavailable
from smtpgate.sasl.base import ScramSecret, SecretScheme
from smtpgate.sasl.cram_md5 import format_cram_md5, parse_cram_md5
from smtpgate.sasl.scram import format_rfc5803, parse_rfc5803

COLUMNS = (
    "name, password_hash, scram_sha1, scram_sha256, cram_md5, allowed_mechanisms, may_act_as, "
    "kind, senders, networks, max_per_day, expires, disabled"
)
SECRET_COLUMNS = ("password_hash", "scram_sha1", "scram_sha256", "cram_md5")
FAKE_SECRETS = "fake-secrets"  # the server_keys row behind unknown users' fake secrets
KEY_BYTES = 32
_SHA1, _SHA256 = SecretScheme.SCRAM_SHA_1, SecretScheme.SCRAM_SHA_256


def secrets_row(
    secrets: Account | SecretsUpdate,
) -> tuple[str | None, str | None, str | None, str | None]:
    return (
        secrets.password_hash,
        None if secrets.scram_sha1 is None else format_rfc5803(_SHA1, secrets.scram_sha1),
        None if secrets.scram_sha256 is None else format_rfc5803(_SHA256, secrets.scram_sha256),
        None if secrets.cram_md5 is None else format_cram_md5(secrets.cram_md5),
    )


def account_row(account: Account) -> tuple[Any, ...]:
    allowed = account.allowed_mechanisms
    return (
        account.name,
        *secrets_row(account),
        None if allowed is None else ",".join(sorted(allowed)),
        ",".join(sorted(account.may_act_as)),
        account.kind,
        ",".join(account.senders),
        ",".join(account.networks),
        account.max_per_day,
        None if account.expires is None else account.expires.isoformat(),
        int(account.disabled),
    )


def _split(text: str) -> frozenset[str]:
    return frozenset(item for item in text.split(",") if item)


def _scram(text: str, mechanism: SecretScheme) -> ScramSecret:
    found, secret = parse_rfc5803(text)
    if found != mechanism:
        raise ValueError("SCRAM secret of the wrong mechanism")
    return secret


def account_from_row(row: tuple[Any, ...]) -> Account:
    name, password_hash, sha1, sha256, cram, allowed, may_act_as = row[:7]
    kind, senders, networks, max_per_day, expires, disabled = row[7:]
    try:
        return Account(
            name=name,
            password_hash=password_hash,
            scram_sha1=None if sha1 is None else _scram(sha1, _SHA1),
            scram_sha256=None if sha256 is None else _scram(sha256, _SHA256),
            cram_md5=None if cram is None else parse_cram_md5(cram),
            allowed_mechanisms=None if allowed is None else _split(allowed),
            may_act_as=_split(may_act_as or ""),
            kind=str(kind),
            senders=tuple(item for item in senders.split(",") if item),
            networks=tuple(item for item in networks.split(",") if item),
            max_per_day=None if max_per_day is None else int(max_per_day),
            expires=None if expires is None else date.fromisoformat(expires),
            disabled=bool(disabled),
        )
    except (ValueError, TypeError):
        raise StoreUnavailable(f"the stored record of user {name!r} is malformed") from None
