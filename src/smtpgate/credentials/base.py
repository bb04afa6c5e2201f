"""Accounts and the credential store boundary.

The store is async so that later back ends (PostgreSQL) fit the same shape;
the SQLite store runs its queries in a worker thread. Any failure to read or
write the store raises ``StoreUnavailable``: the host answers 454 4.7.0 and
does not count the attempt as a failed login.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from smtpgate.sasl.base import CramMd5Secret, ScramSecret, SecretScheme


class StoreUnavailable(Exception):
    """The store cannot be read or written right now (454 4.7.0)."""


class UnknownUser(Exception):
    """An administrative command named a user that does not exist."""


class StaleAccount(Exception):
    """A conditional update found the account changed since it was read."""


class UserExists(Exception):
    """``user add`` for a name that is already taken."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    # Dovecot-style "{SCHEME}hash", e.g. "{ARGON2ID}$argon2id$v=19$...". None: no password hash.
    password_hash: str | None = field(default=None, repr=False)
    scram_sha1: ScramSecret | None = field(default=None, repr=False)
    scram_sha256: ScramSecret | None = field(default=None, repr=False)
    cram_md5: CramMd5Secret | None = field(default=None, repr=False)
    allowed_mechanisms: frozenset[str] | None = None  # None: every enabled mechanism
    may_act_as: frozenset[str] = frozenset()
    # Device accounts (credentials/devices.py): "person" or "device", and what binds it.
    kind: str = "person"
    senders: tuple[str, ...] = ()  # addresses and "*@domain", lower-case; a person's --address
    networks: tuple[str, ...] = ()  # CIDRs it may log in from; empty: anywhere
    max_per_day: int | None = None  # messages per UTC day; None: no limit
    expires: date | None = None  # last UTC day it may log in
    disabled: bool = False

    def secret_for(self, scheme: SecretScheme) -> ScramSecret | CramMd5Secret | None:
        return {
            SecretScheme.SCRAM_SHA_1: self.scram_sha1,
            SecretScheme.SCRAM_SHA_256: self.scram_sha256,
            SecretScheme.CRAM_MD5: self.cram_md5,
        }[scheme]


@dataclass(frozen=True, slots=True)
class SecretsUpdate:
    """Secrets to store in one transaction (password transition, passwd). None: keep."""

    password_hash: str | None = field(default=None, repr=False)
    scram_sha1: ScramSecret | None = field(default=None, repr=False)
    scram_sha256: ScramSecret | None = field(default=None, repr=False)
    cram_md5: CramMd5Secret | None = field(default=None, repr=False)


class CredentialStore(Protocol):
    async def get(self, name: str) -> Account | None: ...

    def kept(self, name: str) -> Account | None:
        """What ``get`` would return now, when the store can tell without waiting (an
        account it holds in memory and knows to be current); None: ask ``get``."""

    async def add(self, account: Account) -> None: ...  # raises UserExists

    # All in one transaction: any name taken (or repeated) -> UserExists, nothing added.
    async def add_many(self, accounts: Sequence[Account]) -> None: ...

    async def replace(self, account: Account) -> None: ...  # raises UnknownUser

    async def update_secrets(
        self, name: str, update: SecretsUpdate, *, if_hash: str | bool | None = False
    ) -> None:
        """Write the given secrets in one transaction (UnknownUser if absent).

        ``if_hash``: False writes unconditionally; otherwise only while the stored
        password hash still equals it (None: still has none), else StaleAccount.
        The password transition uses this so a concurrent ``user passwd`` wins.
        """

    async def delete(self, name: str) -> None: ...  # raises UnknownUser

    async def names(self) -> list[str]: ...

    async def fake_secret_key(self) -> bytes:
        """The random key behind unknown users' fake secrets: made once, then shared.

        Stored with the credentials, so every worker, every restart and every
        instance on this store derives the same fake salt for a name (RFC 5802
        section 9: an unknown user must look like a real one). Never logged.
        """

    async def close(self) -> None: ...
