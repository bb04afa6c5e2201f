"""Concurrent logins with the same credentials share one Argon2 verify (issue #5 W2)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import smtpgate.auth.service as service_module
from smtpgate.credentials import passwords
from tests.auth.conftest import PASSWORD, TLS_PEER, MakeRig, code, plain


async def test_identical_concurrent_checks_share_one_verify(
    make: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make()
    calls = 0
    gate = threading.Event()
    real = passwords.verify_account_password

    def slow_verify(*args: Any) -> bool:
        nonlocal calls
        calls += 1
        gate.wait(5)  # hold the first verify until every login is waiting on it
        return real(*args)

    monkeypatch.setattr(service_module, "verify_account_password", slow_verify)
    logins = [asyncio.ensure_future(plain(rig.conversation(TLS_PEER))) for _ in range(8)]
    await asyncio.sleep(0.2)
    gate.set()
    turns = await asyncio.gather(*logins)
    assert [code(t) for t in turns] == ["235 2.7.0"] * 8
    assert calls == 1


async def test_different_passwords_are_not_shared(
    make: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make()
    calls = 0
    real = passwords.verify_account_password

    def counting(*args: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(service_module, "verify_account_password", counting)
    good, bad = await asyncio.gather(
        plain(rig.conversation(TLS_PEER)),
        plain(rig.conversation(TLS_PEER), password=PASSWORD + "x"),
    )
    assert code(good) == "235 2.7.0" and code(bad) == "535 5.7.8"
    assert calls == 2
