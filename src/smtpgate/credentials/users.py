"""The user administration API behind ``smtpgate user ...``.

Theory of operation
-------------------
Each function validates its input first, then makes one store call, so a
refused command leaves the store untouched:

- user names are SASLprepped (RFC 4013, as stored strings) before any
  lookup or write, the same preparation the mechanisms apply at AUTH time;
  a *new* name must also be one every mechanism and the passwd-file format
  can carry (``passwd_file.prepare_new_name``: no control characters, not
  only white space, no ``:``, at most 255 octets); lookups accept any
  preparable name, so that ``del`` still removes one stored before the rule;
- ``--allow-mechanisms`` names are upper-cased and must be known;
- ``--address`` values are sender addresses (``credentials/devices.py``:
  ``parse_sender``), checked at MAIL FROM when ``[auth] enforce_sender``;
- ``--may-act-as`` identities are kept as given, but may not be empty or
  contain a comma (the store keeps them as a comma-separated list).

``add_user`` and ``set_password`` store everything a password can give:
an Argon2id hash, SCRAM-SHA-1 and SCRAM-SHA-256 secrets, and the CRAM-MD5
secret when asked. ``set_password`` replaces *all* secrets, so nothing
derived from the old password survives. Hashing runs in a worker thread.

``import_passwd_file`` is all-or-nothing: the whole file is parsed and
checked (hash work factors against the ``[import]`` limits too), then every
account is inserted in one transaction (``add_many``); a name that already
exists aborts the import with ``UserExists``.

Errors: ``ValueError`` for bad input (the text says which argument),
``UserExists``/``UnknownUser`` from the store, ``PasswdFileError`` for a
bad file, ``StoreUnavailable`` when the store fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from smtpgate.credentials.base import Account, CredentialStore, UnknownUser
from smtpgate.credentials.devices import parse_sender
from smtpgate.credentials.passwd_file import parse_passwd_file, prepare_name, prepare_new_name
from smtpgate.credentials.passwords import secrets_from_password
from smtpgate.sasl.registry import REGISTRY

__all__ = [
    "add_user",
    "allowed_mechanisms",
    "delete_user",
    "import_passwd_file",
    "list_users",
    "prepare_name",
    "set_password",
]


def allowed_mechanisms(names: list[str] | None) -> frozenset[str] | None:
    """``--allow-mechanisms``, upper-cased; each must be in the sasl registry."""
    if names is None:
        return None
    wanted = frozenset(name.strip().upper() for name in names)
    unknown = sorted(wanted - REGISTRY.keys())
    if unknown:
        raise ValueError(
            f"unknown mechanism(s) {', '.join(unknown)} (known: {', '.join(sorted(REGISTRY))})"
        )
    if not wanted:
        raise ValueError("--allow-mechanisms needs at least one mechanism")
    return wanted


def _identities(identities: list[str]) -> frozenset[str]:
    for identity in identities:
        if not identity or "," in identity:
            raise ValueError(f"bad authorization identity {identity!r}: empty or contains ','")
    return frozenset(identities)


async def add_user(
    store: CredentialStore,
    name: str,
    password: str,
    *,
    allow_mechanisms: list[str] | None,
    may_act_as: list[str],
    cram_md5: bool,
    addresses: Sequence[str] = (),
) -> Account:
    """Create a user with every secret its password gives; UserExists if taken."""
    prepared = prepare_new_name(name)
    allowed = allowed_mechanisms(allow_mechanisms)
    senders = tuple(dict.fromkeys(parse_sender(address) for address in addresses))
    identities = _identities(may_act_as)
    update = await asyncio.to_thread(secrets_from_password, password, cram_md5=cram_md5)
    account = Account(
        name=prepared,
        password_hash=update.password_hash,
        scram_sha1=update.scram_sha1,
        scram_sha256=update.scram_sha256,
        cram_md5=update.cram_md5,
        allowed_mechanisms=allowed,
        may_act_as=identities,
        senders=senders,
    )
    await store.add(account)
    return account


async def set_password(store: CredentialStore, name: str, password: str, *, cram_md5: bool) -> None:
    """Replace every secret of ``name`` with those of ``password``; UnknownUser if absent."""
    prepared = prepare_name(name)
    current = await store.get(prepared)
    if current is None:
        raise UnknownUser(prepared)
    update = await asyncio.to_thread(secrets_from_password, password, cram_md5=cram_md5)
    await store.replace(
        dataclasses.replace(
            current,
            password_hash=update.password_hash,
            scram_sha1=update.scram_sha1,
            scram_sha256=update.scram_sha256,
            cram_md5=update.cram_md5,
        )
    )


async def delete_user(store: CredentialStore, name: str) -> None:
    """Remove ``name``; UnknownUser if absent."""
    await store.delete(prepare_name(name))


async def list_users(store: CredentialStore) -> list[Account]:
    """Every account, by name (a user deleted meanwhile is skipped)."""
    accounts: list[Account] = []
    for name in await store.names():
        account = await store.get(name)
        if account is not None:
            accounts.append(account)
    return accounts


async def import_passwd_file(
    store: CredentialStore, path: Path, *, limits: Mapping[str, int]
) -> int:
    """Import a Dovecot passwd-file, all or nothing; the number of users added.

    ``limits``: the ``[import]`` keys and values that bound each hash's cost.
    """
    accounts = await asyncio.to_thread(parse_passwd_file, path, limits)
    if accounts:
        await store.add_many(accounts)
    return len(accounts)
