"""The warm path: a login the store holds in memory and the cache verified recently is
answered at once by ``Conversation.begin`` (a ``Turn``, no task), and only then. Anything
that could change the answer sends it down the full path, which owns every failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable

from smtpgate.auth.service import Conversation, Peer, Turn
from smtpgate.credentials.passwords import secrets_from_password
from smtpgate.credentials.sqlite import SqliteStore
from tests.auth.conftest import PASSWORD, PLAIN_PEER, TLS_PEER, MakeRig, Rig, account, code
from tests.sasl.clients import plain_message


def begin_plain(conv: Conversation, password: str = PASSWORD,
                authzid: str = "") -> Turn | Awaitable[Turn]:
    return conv.begin("PLAIN", plain_message("alice", password, authzid), None)


async def settle(step: Turn | Awaitable[Turn]) -> Turn:
    return step if isinstance(step, Turn) else await step


async def warm_rig(make: MakeRig, peer: Peer = TLS_PEER) -> Rig:
    """alice has logged in twice (the full path): her password is in the verified cache,
    and the store keeps her account (it keeps what it read at a known data_version, which
    its first read only learns)."""
    rig = await make()
    first = begin_plain(rig.conversation(peer))
    assert not isinstance(first, Turn), "a first login has to read and verify"
    assert code(await first) == "235 2.7.0"
    assert code(await settle(begin_plain(rig.conversation(peer)))) == "235 2.7.0"
    return rig


async def test_a_repeated_login_is_answered_at_once(make: MakeRig) -> None:
    rig = await warm_rig(make)
    gets = rig.store.gets
    turn = begin_plain(rig.conversation())
    assert isinstance(turn, Turn)
    assert code(turn) == "235 2.7.0" and turn.user == "alice"
    assert turn.account is not None and turn.account.name == "alice"
    assert rig.store.gets == gets and rig.sleeps.delays == []


async def test_a_wrong_password_takes_the_full_path(make: MakeRig) -> None:
    rig = await warm_rig(make)
    step = begin_plain(rig.conversation(), password="wrong")
    assert not isinstance(step, Turn)
    assert code(await step) == "535 5.7.8" and rig.sleeps.delays == [2.0]


async def test_a_password_changed_by_another_process_is_seen(make: MakeRig) -> None:
    rig = await warm_rig(make)
    other = SqliteStore(rig.sqlite._path)  # the CLI's `user passwd`, say
    try:
        fresh = secrets_from_password("a new one", cram_md5=False)
        await other.update_secrets("alice", fresh)
    finally:
        await other.close()
    old = begin_plain(rig.conversation())
    assert not isinstance(old, Turn)
    assert code(await old) == "535 5.7.8"
    assert code(await settle(begin_plain(rig.conversation(), password="a new one"))) == "235 2.7.0"


async def test_a_disabled_account_takes_the_full_path(make: MakeRig) -> None:
    rig = await warm_rig(make)
    alice = await rig.sqlite.get("alice")
    assert alice is not None
    await rig.sqlite.replace(dataclasses.replace(alice, disabled=True))
    step = begin_plain(rig.conversation())
    assert not isinstance(step, Turn)
    assert code(await step) == "535 5.7.8"


async def test_a_throttled_login_takes_the_full_path(make: MakeRig) -> None:
    """A login guessed at from many places is refused everywhere it never succeeded."""
    rig = await warm_rig(make)
    for _ in range(20):  # user_failure_limit
        rig.throttle.record_failure("198.51.100.9", "alice")
    assert isinstance(begin_plain(rig.conversation()), Turn)  # known good from TLS_PEER
    step = begin_plain(rig.conversation(Peer("192.0.2.99", tls_active=True)))
    assert not isinstance(step, Turn)
    assert code(await step) == "454 4.7.0"


async def test_an_authzid_it_may_not_use_takes_the_full_path(make: MakeRig) -> None:
    rig = await warm_rig(make)
    step = begin_plain(rig.conversation(), authzid="bob")
    assert not isinstance(step, Turn)
    assert code(await step) == "535 5.7.8"


async def test_a_due_password_transition_takes_the_full_path(make: MakeRig) -> None:
    """Over TLS a login stores the secrets the account lacks; the warm path never skips
    that. Without TLS nothing is stored, so a warm login there is fine."""
    rig = await make(alice=False, plaintext_requires_tls=False)
    bare = dataclasses.replace(account("alice"), scram_sha1=None, scram_sha256=None)
    await rig.sqlite.add(bare)
    for _ in range(2):  # the verified cache, then the store's kept account
        assert code(await settle(begin_plain(rig.conversation(PLAIN_PEER)))) == "235 2.7.0"
    assert isinstance(begin_plain(rig.conversation(PLAIN_PEER)), Turn)  # no TLS: warm
    over_tls = begin_plain(rig.conversation(TLS_PEER))
    assert not isinstance(over_tls, Turn)
    assert code(await over_tls) == "235 2.7.0"
    stored = await rig.sqlite.get("alice")
    assert stored is not None and stored.scram_sha256 is not None  # the transition ran
    await rig.sqlite.get("alice")  # kept again, at the new data_version
    assert isinstance(begin_plain(rig.conversation(TLS_PEER)), Turn)  # and now it is warm



async def test_a_warm_login_exchange_is_answered_at_every_step(make: MakeRig) -> None:
    """AUTH LOGIN, a device's usual: the two challenges and the warm result come at once."""
    rig = await warm_rig(make)
    conv = rig.conversation()
    steps = [conv.begin("LOGIN", None, None), conv.answer(b"alice"), conv.answer(PASSWORD.encode())]
    assert all(isinstance(step, Turn) for step in steps)
    first, second, last = (step for step in steps if isinstance(step, Turn))
    assert (first.challenge, second.challenge) == (b"Username:", b"Password:")
    assert code(last) == "235 2.7.0" and last.user == "alice"
