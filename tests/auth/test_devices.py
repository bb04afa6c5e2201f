"""Device logins that must fail although the credentials are right: disabled, expired,
from outside the device's networks. Each is answered like a wrong password: 535 5.7.8,
counted, delayed, after a real verify (never the cache), by every mechanism."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from smtpgate.auth import service as service_module
from smtpgate.auth.service import Peer
from smtpgate.credentials import passwords
from tests.auth.conftest import (
    ALL_MECHANISMS,
    MakeRig,
    Rig,
    account,
    code,
    cram_md5,
    login,
    plain,
    scram,
)

INSIDE = Peer("192.0.2.10", tls_active=True)
OUTSIDE = Peer("198.51.100.7", tls_active=True)
MAPPED = Peer("::ffff:192.0.2.10", tls_active=True)  # a dual-stack socket's IPv4 client
TODAY = date(2026, 6, 15)


async def rig_with_device(make: MakeRig, **fields: Any) -> Rig:
    rig = await make(mechanisms=(*ALL_MECHANISMS, "CRAM-MD5"), failure_delay=1.5,
                     max_failures_per_connection=10)
    device = dataclasses.replace(
        account("copier", cram_md5=True), kind="device", senders=("scan@example.org",),
        **fields,
    )
    await rig.sqlite.add(device)
    rig.service.today = lambda: TODAY
    return rig


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = passwords.verify_account_password

    def counting(account: Any, password: str) -> bool:
        calls.append(account.name)
        return real(account, password)

    monkeypatch.setattr(service_module, "verify_account_password", counting)
    return calls


async def every_mechanism(rig: Rig, peer: Peer) -> list[str]:
    turns = [
        await plain(rig.service.conversation(peer), "copier"),
        await login(rig.service.conversation(peer), "copier"),
        (await scram(rig.service.conversation(peer), user="copier"))[0],
        (await scram(rig.service.conversation(peer), "SCRAM-SHA-1", user="copier"))[0],
        await cram_md5(rig.service.conversation(peer), "copier"),
    ]
    return [code(turn) for turn in turns]


async def test_inside_its_networks_every_mechanism_succeeds(make: MakeRig) -> None:
    rig = await rig_with_device(make, networks=("192.0.2.0/24", "2001:db8::/32"))
    assert await every_mechanism(rig, INSIDE) == ["235 2.7.0"] * 5
    assert await every_mechanism(rig, MAPPED) == ["235 2.7.0"] * 5
    turn = await plain(rig.service.conversation(INSIDE), "copier")
    assert turn.account is not None and turn.account.senders == ("scan@example.org",)


@pytest.mark.parametrize(
    ("fields", "peer"),
    [
        ({"networks": ("192.0.2.0/24",)}, OUTSIDE),
        ({"networks": ("2001:db8::/32",)}, INSIDE),  # another family never matches
        ({"disabled": True}, INSIDE),
        ({"expires": date(2026, 6, 14)}, INSIDE),
    ],
    ids=["outside", "other-family", "disabled", "expired"],
)
async def test_refused_like_a_wrong_password(make: MakeRig, fields: dict[str, Any],
                                             peer: Peer) -> None:
    rig = await rig_with_device(make, **fields)
    wrong = await plain(rig.service.conversation(peer), "copier", password="guess")
    assert await every_mechanism(rig, peer) == ["535 5.7.8"] * 5
    refused = await plain(rig.service.conversation(peer), "copier")
    assert refused.reply == wrong.reply and refused.account is None
    assert rig.login_failures("copier") == 7  # every one counted, like the wrong password
    assert rig.sleeps.delays == [1.5] * 7  # ... and delayed like it


async def test_valid_through_its_last_day(make: MakeRig) -> None:
    rig = await rig_with_device(make, expires=TODAY)
    assert code(await plain(rig.service.conversation(INSIDE), "copier")) == "235 2.7.0"


async def test_refusal_does_a_real_verify_even_when_cached(make: MakeRig,
                                                           verify_calls: list[str]) -> None:
    rig = await rig_with_device(make)
    for _ in range(2):
        assert code(await plain(rig.service.conversation(INSIDE), "copier")) == "235 2.7.0"
    assert verify_calls == ["copier"]  # the second came from the cache
    current = await rig.sqlite.get("copier")
    assert current is not None
    await rig.sqlite.replace(dataclasses.replace(current, disabled=True))
    assert code(await plain(rig.service.conversation(INSIDE), "copier")) == "535 5.7.8"
    assert verify_calls == ["copier", "copier"]  # the same work as a wrong password
    await rig.sqlite.replace(current)
    assert code(await plain(rig.service.conversation(INSIDE), "copier")) == "235 2.7.0"


async def test_people_have_no_device_restrictions(make: MakeRig) -> None:
    rig = await make()
    turn = await plain(rig.service.conversation(OUTSIDE))
    assert code(turn) == "235 2.7.0"
    assert turn.account is not None and turn.account.kind == "person"
