"""Device account rules (credentials/devices.py) and administration (credentials/device_admin.py),
on a real SQLite store."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from smtpgate.credentials.base import Account, UnknownUser, UserExists
from smtpgate.credentials.device_admin import (
    ALPHABET,
    PASSWORD_BITS,
    DeviceSpec,
    NotADevice,
    add_device,
    generate_password,
    get_device,
    list_devices,
    revoke_device,
    rotate_device,
    set_disabled,
)
from smtpgate.credentials.devices import (
    in_networks,
    login_refusal,
    may_send_as,
    parse_expires,
    parse_network,
    parse_sender,
)
from smtpgate.credentials.passwords import verify_account_password
from smtpgate.credentials.sqlite import SqliteStore
from smtpgate.credentials.users import add_user

TODAY = date(2026, 6, 15)


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [("Scan@Example.ORG", "scan@example.org"), ("*@example.org", "*@example.org"),
     (" a.b+c@x.example ", "a.b+c@x.example")],
)
def test_good_senders(text: str, stored: str) -> None:
    assert parse_sender(text) == stored


@pytest.mark.parametrize(
    "text",
    ["", "nobody", "@example.org", "scan@", "a@b@c", "a b@example.org", "<a@example.org>",
     "a,b@example.org", "s*@example.org", "*@*.example.org", "a@.example.org",
     "a@example..org", "x" * 250 + "@example.org"],
)
def test_bad_senders(text: str) -> None:
    with pytest.raises(ValueError, match="bad sender"):
        parse_sender(text)


def test_networks_and_dates() -> None:
    assert parse_network("192.0.2.0/24") == "192.0.2.0/24"
    assert parse_network("127.0.0.2") == "127.0.0.2/32"
    assert parse_network("2001:DB8::/32") == "2001:db8::/32"
    for bad in ("192.0.2.1/24", "300.0.0.0/8", "lan", "", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="bad network"):
            parse_network(bad)
    assert parse_expires("1999-12-31") == date(1999, 12, 31)  # the past is accepted
    for bad in ("2030-02-30", "2030-1-1", "20300101", "tomorrow", "2030-01-01T00:00"):
        with pytest.raises(ValueError, match="bad date"):
            parse_expires(bad)


# -- the rules ---------------------------------------------------------------------------


def test_login_refusal() -> None:
    device = Account("d", kind="device", networks=("192.0.2.0/24", "2001:db8::/32"))
    assert login_refusal(device, "192.0.2.200", TODAY) is None
    assert login_refusal(device, "::ffff:192.0.2.200", TODAY) is None
    assert login_refusal(device, "2001:db8::1", TODAY) is None
    assert login_refusal(device, "192.0.3.1", TODAY) == "network"
    assert login_refusal(device, "not an address", TODAY) == "network"
    expiring = Account("d", kind="device", expires=TODAY)
    assert login_refusal(expiring, "192.0.3.1", TODAY) is None  # no networks: anywhere
    assert login_refusal(expiring, "192.0.3.1", date(2026, 6, 16)) == "expired"
    assert login_refusal(Account("d", disabled=True), "192.0.2.1", TODAY) == "disabled"
    assert not in_networks("192.0.2.1", ["garbage"])


def test_device_senders() -> None:
    device = Account("copier@example.org", kind="device",
                     senders=("scan@example.org", "*@branch.example"))
    assert may_send_as(device, "", "scan@example.org")
    assert may_send_as(device, "", "SCAN@EXAMPLE.ORG")
    assert may_send_as(device, "", "anyone@branch.example")
    assert not may_send_as(device, "", "x@sub.branch.example")
    assert not may_send_as(device, "", "scan@example.org.evil")
    assert not may_send_as(device, "", "")
    # A device is never its own sender by name, unlike a person.
    assert not may_send_as(device, "copier@example.org", "copier@example.org")


def test_person_senders() -> None:
    bob = Account("bob", senders=("bob@example.org",))
    assert may_send_as(bob, "bob", "bob@example.org")
    assert not may_send_as(bob, "bob", "bob")  # not an address
    carol = Account("carol@example.org")
    assert may_send_as(carol, "carol@example.org", "Carol@Example.org")
    assert may_send_as(carol, "shared@example.org", "shared@example.org")  # acting as it
    assert not may_send_as(carol, "carol@example.org", "bob@example.org")


# -- generated passwords -------------------------------------------------------------------


def test_generated_passwords() -> None:
    seen = {generate_password() for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        assert re.fullmatch(r"([a-z2-9]{4}-){5}[a-z2-9]{4}", password), password
        assert not set(password) & set("01ilo")
    assert set("".join(seen)) - {"-"} == set(ALPHABET)
    assert math.floor(24 * math.log2(len(ALPHABET))) == PASSWORD_BITS


# -- administration ------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "users.db")
    yield store
    await store.close()


SPEC = DeviceSpec(senders=["Scan@Example.org", "scan@example.org", "*@example.net"],
                  networks=["127.0.0.2/32"], max_per_day=40, expires="2030-01-31",
                  mechanisms=["plain", "LOGIN"])


async def test_add_device_stores_the_spec_and_secrets(store: SqliteStore) -> None:
    account, password = await add_device(store, "copier", SPEC, cram_md5=True)
    stored = await store.get("copier")
    assert stored == account
    assert (stored.kind, stored.senders, stored.networks) == (
        "device", ("scan@example.org", "*@example.net"), ("127.0.0.2/32",)
    )
    assert (stored.max_per_day, stored.expires, stored.disabled) == (40, date(2030, 1, 31), False)
    assert stored.allowed_mechanisms == frozenset({"PLAIN", "LOGIN"})
    assert stored.scram_sha256 is not None and stored.cram_md5 is not None
    assert verify_account_password(stored, password)
    assert password not in repr(stored)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (DeviceSpec(senders=[]), "at least one --sender"),
        (DeviceSpec(senders=["nope"]), "bad sender"),
        (DeviceSpec(senders=["a@b.example"], networks=["10.0.0.1/8"]), "bad network"),
        (DeviceSpec(senders=["a@b.example"], max_per_day=0), "max-per-day"),
        (DeviceSpec(senders=["a@b.example"], expires="31.01.2030"), "bad date"),
        (DeviceSpec(senders=["a@b.example"], mechanisms=["ROT13"]), "unknown mechanism"),
    ],
)
async def test_bad_device_changes_nothing(store: SqliteStore, spec: DeviceSpec,
                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await add_device(store, "copier", spec, cram_md5=False)
    assert await store.names() == []


async def test_device_life_cycle(store: SqliteStore) -> None:
    await add_user(store, "alice", "a password", allow_mechanisms=None, may_act_as=[],
                   cram_md5=False, addresses=["Alice@Example.org"])
    alice = await store.get("alice")
    assert alice is not None and (alice.kind, alice.senders) == ("person", ("alice@example.org",))
    _, first = await add_device(store, "copier", SPEC, cram_md5=False)
    with pytest.raises(UserExists):
        await add_device(store, "copier", SPEC, cram_md5=False)
    assert [d.name for d in await list_devices(store)] == ["copier"]

    second = await rotate_device(store, "copier", cram_md5=False)
    rotated = await get_device(store, "copier")
    assert not verify_account_password(rotated, first)
    assert verify_account_password(rotated, second)
    assert rotated.senders == ("scan@example.org", "*@example.net")  # settings kept

    await set_disabled(store, "copier", True)
    assert (await get_device(store, "copier")).disabled
    await set_disabled(store, "copier", False)
    assert not (await get_device(store, "copier")).disabled

    for action in (lambda: revoke_device(store, "alice"), lambda: get_device(store, "alice"),
                   lambda: set_disabled(store, "alice", True)):
        with pytest.raises(NotADevice):
            await action()
    await revoke_device(store, "copier")
    assert await store.names() == ["alice"]
    with pytest.raises(UnknownUser):
        await rotate_device(store, "copier", cram_md5=False)
