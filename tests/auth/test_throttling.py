"""Per-IP and per-login windows as the auth service applies them (injected clock, no sleeping)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from smtpgate.auth.fair import FairHasher, HashingBusy
from smtpgate.auth.service import Peer
from smtpgate.credentials.base import Account
from smtpgate.policy.throttle import MAX_SLOWDOWN, client_key
from smtpgate.protocol.events import AuthAbort
from tests.auth.conftest import MakeRig, MemoryStore, add_account, code, cram_md5, plain, scram

# -- per IP ----------------------------------------------------------------------


async def test_ip_window_blocks_without_checking_credentials(make: MakeRig) -> None:
    rig = await make(ip_failure_limit=3, ip_failure_window=60, max_failures_per_connection=100,
                     failure_delay=1.0)
    peer = Peer("198.51.100.7", tls_active=True)
    conv = rig.conversation(peer)
    for _ in range(3):
        assert code(await plain(conv, password="wrong")) == "535 5.7.8"
    gets, peeks, delays = rig.store.gets, rig.store.peeks, list(rig.sleeps.delays)
    assert gets == 3
    # the right password, from a new connection of the same IP: 454, store untouched
    fresh = rig.conversation(peer)
    assert code(await plain(fresh)) == "454 4.7.0"
    assert code(await fresh.start("LOGIN", None, None)) == "454 4.7.0"
    assert code((await scram(fresh))[0]) == "454 4.7.0"
    assert rig.store.gets == gets and rig.store.peeks == peeks
    assert rig.sleeps.delays == delays and fresh.failures == 0  # 454 is not a failure
    assert rig.ip_failures("198.51.100.7") == 3
    # another IP is not affected
    assert code(await plain(rig.conversation(Peer("198.51.100.8", tls_active=True)))) == (
        "235 2.7.0"
    )
    # the window slides: once the failures are older than it, the IP may try again
    rig.clock.now += 61
    assert code(await plain(rig.conversation(peer))) == "235 2.7.0"


async def test_ip_block_precedes_mechanism_checks(make: MakeRig) -> None:
    rig = await make(ip_failure_limit=1, max_failures_per_connection=100)
    peer = Peer("198.51.100.9", tls_active=False)
    turn, _, _ = await scram(rig.conversation(peer), password="wrong")
    assert code(turn) == "535 5.7.8"
    conv = rig.conversation(peer)
    assert code(await conv.start("XOAUTH2", None, None)) == "454 4.7.0"
    assert code(await conv.start("PLAIN", None, None)) == "454 4.7.0"


async def test_ip_window_counts_every_kind_of_failure(make: MakeRig) -> None:
    rig = await make(ip_failure_limit=3, max_failures_per_connection=100)
    conv = rig.conversation()
    assert code(await conv.start("PLAIN", b"broken", None)) == "501 5.5.2"
    assert code(await plain(conv, user="nobody")) == "535 5.7.8"
    assert (await conv.start("LOGIN", None, None)).challenge == b"Username:"
    assert code(await conv.abort(AuthAbort.CANCELLED)) == "501 5.7.0"
    assert code(await plain(conv)) == "454 4.7.0"


@pytest.mark.parametrize(
    ("failing", "same", "other"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"),
        ("2001:db8::a", "2001:db8::b", "2001:db9::a"),
        ("::ffff:192.0.2.1", "192.0.2.1", "192.0.2.2"),  # v4-mapped: keyed as IPv4
    ],
)
async def test_ip_window_keys_ipv6_by_slash_64(make: MakeRig, failing: str, same: str,
                                               other: str) -> None:
    rig = await make(ip_failure_limit=2, max_failures_per_connection=100)
    conv = rig.conversation(Peer(failing, tls_active=True))
    for _ in range(2):
        assert code(await plain(conv, password="wrong")) == "535 5.7.8"
    assert client_key(failing) == client_key(same) != client_key(other)
    assert code(await plain(rig.conversation(Peer(same, tls_active=True)))) == "454 4.7.0"
    assert code(await plain(rig.conversation(Peer(other, tls_active=True)))) == "235 2.7.0"


# -- per login -----------------------------------------------------------------------


def _ip(n: int) -> Peer:
    return Peer(f"203.0.113.{n}", tls_active=True)


async def test_login_window_slows_down_then_refuses(make: MakeRig) -> None:
    rig = await make(user_failure_limit=4, user_failure_window=100, failure_delay=1.0,
                     ip_failure_limit=100)
    # distributed guessing: one failure each from many IPs
    for n in range(4):
        assert code(await plain(rig.conversation(_ip(n)), password=f"guess{n}")) == "535 5.7.8"
    # from half the limit on, each failure is answered more slowly
    assert rig.sleeps.delays == [1.0, 1.5, 2.0, 3.0]
    assert rig.login_failures("alice") == 4
    # at the limit the login is refused, without a lookup, even with the right password
    gets, peeks = rig.store.gets, rig.store.peeks
    conv = rig.conversation(_ip(50))
    assert code(await plain(conv)) == "454 4.7.0"
    turn, _, _ = await scram(conv)
    assert code(turn) == "454 4.7.0"
    assert rig.store.gets == gets and rig.store.peeks == peeks
    assert conv.failures == 0 and len(rig.sleeps.delays) == 4
    # other logins are not affected
    await add_account(rig.sqlite, "bob", "bob's password")
    assert code(await plain(rig.conversation(_ip(50)), "bob", "bob's password")) == "235 2.7.0"
    # the window slides
    rig.clock.now += 101
    assert code(await plain(rig.conversation(_ip(50)))) == "235 2.7.0"


async def test_login_window_spares_a_known_good_ip(make: MakeRig) -> None:
    rig = await make(user_failure_limit=4, failure_delay=1.0, ip_failure_limit=100)
    home = Peer("192.0.2.77", tls_active=True)
    v6home = Peer("2001:db8:7::1", tls_active=True)
    assert code(await plain(rig.conversation(home))) == "235 2.7.0"  # alice logs in from home
    assert code(await plain(rig.conversation(v6home))) == "235 2.7.0"  # and from her laptop
    rig.clock.now += 3600
    for n in range(8):  # then someone guesses from everywhere else
        await plain(rig.conversation(_ip(n)), password=f"guess{n}")
    assert code(await plain(rig.conversation(_ip(99)))) == "454 4.7.0"
    # from home: no lock-out, and a typo there is not slowed down
    rig.sleeps.delays.clear()
    assert code(await plain(rig.conversation(home), password="typo")) == "535 5.7.8"
    assert rig.sleeps.delays == [1.0]
    assert code(await plain(rig.conversation(home))) == "235 2.7.0"
    turn, _, _ = await scram(rig.conversation(Peer(home.ip)))
    assert code(turn) == "235 2.7.0"
    # the same /64 counts as home for IPv6, another /64 does not
    assert code(await plain(rig.conversation(Peer("2001:db8:7::2", tls_active=True)))) == (
        "235 2.7.0"
    )
    assert code(await plain(rig.conversation(Peer("2001:db8:8::1", tls_active=True)))) == (
        "454 4.7.0"
    )


async def test_login_slowdown_is_bounded(make: MakeRig) -> None:
    store = MemoryStore([Account("alice", password_hash="{PLAIN}s3cret")])  # instant verify
    rig = await make(user_failure_limit=40, failure_delay=0.0, ip_failure_limit=1000,
                     store=store, alice=False)
    for n in range(39):
        assert code(await plain(rig.conversation(_ip(n)), password="guess")) == "535 5.7.8"
    # 20 free failures (half the limit), then 0.5 s doubling per failure, capped
    assert rig.sleeps.delays[:3] == [0.5, 1.0, 2.0]
    assert rig.sleeps.delays[-1] == MAX_SLOWDOWN and max(rig.sleeps.delays) == MAX_SLOWDOWN
    assert len(rig.sleeps.delays) == 39 - 19
    assert code(await plain(rig.conversation(_ip(1)), password="s3cret")) == "235 2.7.0"


async def test_login_window_counts_unknown_users_and_cram(make: MakeRig) -> None:
    rig = await make(mechanisms=("CRAM-MD5", "PLAIN"), user_failure_limit=2,
                     ip_failure_limit=100, failure_delay=0.0)
    await cram_md5(rig.conversation(_ip(1)), user="ghost", password="x")
    await plain(rig.conversation(_ip(2)), user="ghost", password="x")
    assert rig.login_failures("ghost") == 2
    assert code(await cram_md5(rig.conversation(_ip(3)), user="ghost")) == "454 4.7.0"
    assert code(await cram_md5(rig.conversation(_ip(3)))) == "235 2.7.0"


# -- the hashing queue (auth.fair) ------------------------------------------------


async def test_full_hashing_queue_refuses_suspect_addresses_with_454(make: MakeRig) -> None:
    """A full queue answers a recently failing address 454 4.7.0 (not counted, but after
    failure_delay); a clean address takes a suspect job's place; a password verified
    recently is served from the cache without queueing at all."""
    hasher = FairHasher(1, max_queued=1)
    rig = await make(hasher=hasher, failure_delay=1.0, max_failures_per_connection=100)
    gate = threading.Event()
    running = asyncio.ensure_future(hasher.run("203.0.113.9", False, gate.wait, 30))
    waiting = asyncio.ensure_future(hasher.run("203.0.113.8", True, lambda: None))
    await asyncio.sleep(0)
    suspect = rig.conversation()
    rig.throttle.record_failure(suspect.peer.ip, "alice")
    assert code(await plain(suspect, password="guess")) == "454 4.7.0"
    assert suspect.failures == 0 and rig.ip_failures(suspect.peer.ip) == 1
    assert rig.sleeps.delays == [1.0]
    clean = asyncio.ensure_future(plain(rig.conversation(Peer("192.0.2.99", tls_active=True))))
    with pytest.raises(HashingBusy):
        await asyncio.wait_for(waiting, 10)
    gate.set()
    assert code(await asyncio.wait_for(clean, 30)) == "235 2.7.0"
    await running
    gate.clear()  # fill the queue again: the cached password still logs in
    running = asyncio.ensure_future(hasher.run("203.0.113.9", False, gate.wait, 30))
    waiting = asyncio.ensure_future(hasher.run("203.0.113.8", True, lambda: None))
    await asyncio.sleep(0)
    assert code(await plain(suspect)) == "235 2.7.0"
    other = rig.conversation(Peer("198.51.100.66", tls_active=True))
    rig.throttle.record_failure(other.peer.ip, "alice")
    assert code(await plain(other, password="guess")) == "454 4.7.0"
    gate.set()
    await asyncio.gather(running, waiting)


async def test_suspect_means_recent_failures_unless_known_good(make: MakeRig) -> None:
    rig = await make(ip_failure_window=60)
    throttle, ip = rig.throttle, "198.51.100.7"
    assert not throttle.suspect(ip, "alice")
    throttle.record_failure(ip, "alice")
    assert throttle.suspect(ip, "alice") and throttle.suspect(ip, None)
    throttle.record_success(ip, "alice")
    assert not throttle.suspect(ip, "alice") and throttle.suspect(ip, "bob")
    rig.clock.now += 61
    assert not throttle.suspect(ip, "bob")
