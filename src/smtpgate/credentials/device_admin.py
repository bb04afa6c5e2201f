"""The device administration API behind ``smtpgate device ...``.

Theory of operation
-------------------
Like ``credentials/users.py``: each function checks all of its input first,
then makes one store write, so a refused command changes nothing. A device
is an ``Account`` of kind ``device`` (``credentials/devices.py``); commands
that take a NAME refuse a person's account, so ``device revoke`` can never
delete a person.

Devices never choose their password: ``add_device`` and ``rotate_device``
generate one (``generate_password``) and return it once; the store keeps
only what ``secrets_from_password`` derives (Argon2id hash, SCRAM secrets,
CRAM-MD5 contexts when enabled). Rotating replaces every secret, so the old
password stops working at the next AUTH on every worker (the verified-
credentials cache is keyed by the stored hash, which changed).

``revoke`` deletes the account; ``disable`` keeps it, refused at AUTH until
``enable``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Sequence
from datetime import date

from smtpgate.credentials.base import Account, CredentialStore, UnknownUser
from smtpgate.credentials.devices import DEVICE, parse_expires, parse_network, parse_sender
from smtpgate.credentials.passwd_file import prepare_name, prepare_new_name
from smtpgate.credentials.passwords import secrets_from_password
from smtpgate.credentials.users import allowed_mechanisms

__all__ = [
    "PASSWORD_BITS",
    "NotADevice",
    "add_device",
    "generate_password",
    "get_device",
    "list_devices",
    "revoke_device",
    "rotate_device",
    "set_disabled",
    "update_device",
]

# Lower-case letters and digits a copier's panel offers, without the look-alikes
# 0/o, 1/l/i: 31 symbols, 4.95 bits each. Six groups of four: 24 symbols, 118 bits.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS, GROUP_SIZE = 6, 4
PASSWORD_BITS = 118  # floor(24 * log2(31))


class NotADevice(ValueError):
    """A device command named a person's account."""


def generate_password() -> str:
    """``xxxx-xxxx-xxxx-xxxx-xxxx-xxxx`` from ``ALPHABET``, by the OS's CSPRNG."""
    return "-".join(
        "".join(secrets.choice(ALPHABET) for _ in range(GROUP_SIZE)) for _ in range(GROUPS)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSpec:
    """What ``device add`` was told, as given on the command line."""

    senders: Sequence[str]
    networks: Sequence[str] = ()
    max_per_day: int | None = None
    expires: str | None = None
    mechanisms: list[str] | None = None


def _checked(name: str, spec: DeviceSpec) -> Account:
    """The device ``spec`` describes, without secrets; ValueError naming a bad argument."""
    if not spec.senders:
        raise ValueError("a device needs at least one --sender")
    if spec.max_per_day is not None and spec.max_per_day < 1:
        raise ValueError(f"bad --max-per-day {spec.max_per_day}: expected at least 1")
    expires: date | None = None if spec.expires is None else parse_expires(spec.expires)
    return Account(
        name=name,
        kind=DEVICE,
        senders=tuple(dict.fromkeys(parse_sender(s) for s in spec.senders)),
        networks=tuple(dict.fromkeys(parse_network(n) for n in spec.networks)),
        max_per_day=spec.max_per_day,
        expires=expires,
        allowed_mechanisms=allowed_mechanisms(spec.mechanisms),
    )


async def add_device(
    store: CredentialStore, name: str, spec: DeviceSpec, *, cram_md5: bool
) -> tuple[Account, str]:
    """Create a device account; (the account, its generated password). UserExists if taken."""
    template = _checked(prepare_new_name(name), spec)
    password = generate_password()
    update = await asyncio.to_thread(secrets_from_password, password, cram_md5=cram_md5)
    account = dataclasses.replace(
        template,
        password_hash=update.password_hash,
        scram_sha1=update.scram_sha1,
        scram_sha256=update.scram_sha256,
        cram_md5=update.cram_md5,
    )
    await store.add(account)
    return account, password


async def get_device(store: CredentialStore, name: str) -> Account:
    """The device ``name``; UnknownUser if absent, NotADevice for a person."""
    prepared = prepare_name(name)
    account = await store.get(prepared)
    if account is None:
        raise UnknownUser(prepared)
    if account.kind != DEVICE:
        raise NotADevice(f"{prepared} is not a device (see `smtpgate user`)")
    return account


async def list_devices(store: CredentialStore) -> list[Account]:
    devices: list[Account] = []
    for name in await store.names():
        account = await store.get(name)
        if account is not None and account.kind == DEVICE:
            devices.append(account)
    return devices


async def rotate_device(store: CredentialStore, name: str, *, cram_md5: bool) -> str:
    """Replace every secret with those of a new generated password; the password."""
    current = await get_device(store, name)
    password = generate_password()
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
    return password


async def set_disabled(store: CredentialStore, name: str, disabled: bool) -> None:
    current = await get_device(store, name)
    await store.replace(dataclasses.replace(current, disabled=disabled))


async def update_device(
    store: CredentialStore,
    name: str,
    senders: Sequence[str],
    networks: Sequence[str],
    max_per_day: int | None,
) -> Account:
    """Replace a device's senders, networks and daily quota; secrets and the rest stay."""
    current = await get_device(store, name)
    spec = DeviceSpec(senders=senders, networks=networks, max_per_day=max_per_day)
    checked = _checked(current.name, spec)
    updated = dataclasses.replace(
        current, senders=checked.senders, networks=checked.networks, max_per_day=max_per_day
    )
    await store.replace(updated)
    return updated


async def revoke_device(store: CredentialStore, name: str) -> None:
    """Delete the device's account: its password and its settings are gone."""
    current = await get_device(store, name)
    await store.delete(current.name)
