"""Password transition (432 4.7.12), SCRAM through the driver, and unknown users in SCRAM."""

from __future__ import annotations

import base64

import pytest
from passlib.hash import sha512_crypt

from smtpgate.auth.service import Peer
from smtpgate.credentials.base import Account
from smtpgate.credentials.passwords import needs_rehash, verify_account_password
from smtpgate.sasl.base import ChannelBindings
from smtpgate.sasl.scram_secrets import SALT_LEN
from tests.auth.conftest import (
    PASSWORD,
    PLAIN_PEER,
    TLS_PEER,
    MakeRig,
    MemoryStore,
    Rig,
    add_account,
    code,
    cram_md5,
    iterations_of,
    login,
    plain,
    salt_of,
    scram,
)
from tests.sasl.clients import ScramClient

WITH_CRAM = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN")
LEGACY_HASHES = {
    "sha512-crypt": "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD),
    "plain": "{PLAIN}" + PASSWORD,
}


async def _with_legacy(make: MakeRig, stored: str, **kwargs: object) -> Rig:
    rig = await make(alice=False, **kwargs)
    await rig.sqlite.add(Account("legacy", password_hash=stored))
    return rig


@pytest.mark.parametrize("scheme", list(LEGACY_HASHES))
async def test_legacy_account_transitions_after_plain_over_tls(make: MakeRig, scheme: str) -> None:
    rig = await _with_legacy(make, LEGACY_HASHES[scheme], mechanisms=WITH_CRAM)
    conv = rig.conversation(PLAIN_PEER)
    # SCRAM and CRAM-MD5 need secrets the account does not hold yet: 432, not a failure
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        turn, _, server_first = await scram(conv, mechanism, "legacy")
        assert code(turn) == "432 4.7.12" and server_first is None
    assert code(await cram_md5(conv, "legacy")) == "432 4.7.12"
    assert conv.failures == 0 and rig.sleeps.delays == [] and rig.login_failures("legacy") == 0

    # one PLAIN login over TLS derives and stores the missing secrets, rehashed to Argon2id
    assert code(await plain(rig.conversation(TLS_PEER), "legacy")) == "235 2.7.0"
    stored = await rig.sqlite.get("legacy")
    assert stored is not None and stored.password_hash is not None
    assert stored.password_hash.startswith("{ARGON2ID}$argon2id$")
    assert not needs_rehash(stored.password_hash)
    assert stored.scram_sha1 is not None and stored.scram_sha256 is not None
    assert stored.cram_md5 is not None
    assert verify_account_password(stored, PASSWORD)

    # now SCRAM and CRAM-MD5 work, and PLAIN still does
    conv = rig.conversation(PLAIN_PEER)
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        turn, _, _ = await scram(conv, mechanism, "legacy")
        assert code(turn) == "235 2.7.0" and turn.user == "legacy"
    assert code(await cram_md5(conv, "legacy")) == "235 2.7.0"
    assert code(await plain(rig.conversation(TLS_PEER), "legacy")) == "235 2.7.0"
    assert rig.store.updates == 1  # nothing more to store the second time


async def test_login_over_tls_transitions_too(make: MakeRig) -> None:
    rig = await _with_legacy(make, LEGACY_HASHES["plain"])
    assert code(await login(rig.conversation(TLS_PEER), "legacy")) == "235 2.7.0"
    turn, _, _ = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-256", "legacy")
    assert code(turn) == "235 2.7.0"
    stored = await rig.sqlite.get("legacy")
    assert stored is not None and stored.cram_md5 is None  # CRAM-MD5 is not enabled


async def test_plain_without_tls_succeeds_but_does_not_transition(make: MakeRig) -> None:
    rig = await _with_legacy(make, LEGACY_HASHES["sha512-crypt"], plaintext_requires_tls=False)
    assert code(await plain(rig.conversation(PLAIN_PEER), "legacy")) == "235 2.7.0"
    assert code(await login(rig.conversation(PLAIN_PEER), "legacy")) == "235 2.7.0"
    assert rig.store.updates == 0
    stored = await rig.sqlite.get("legacy")
    assert stored == Account("legacy", password_hash=LEGACY_HASHES["sha512-crypt"])
    turn, _, _ = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-256", "legacy")
    assert code(turn) == "432 4.7.12"


async def test_wrong_password_over_tls_does_not_transition(make: MakeRig) -> None:
    rig = await _with_legacy(make, LEGACY_HASHES["plain"])
    assert code(await plain(rig.conversation(TLS_PEER), "legacy", "wrong")) == "535 5.7.8"
    assert rig.store.updates == 0


async def test_disallowed_mechanism_does_not_transition(make: MakeRig) -> None:
    rig = await make(alice=False)
    await rig.sqlite.add(Account("legacy", password_hash=LEGACY_HASHES["plain"],
                                 allowed_mechanisms=frozenset({"LOGIN"})))
    assert code(await plain(rig.conversation(TLS_PEER), "legacy")) == "534 5.7.9"
    assert rig.store.updates == 0
    assert code(await login(rig.conversation(TLS_PEER), "legacy")) == "235 2.7.0"
    assert rig.store.updates == 1


async def test_cram_md5_enabled_later_adds_only_the_cram_secret(make: MakeRig) -> None:
    rig = await make(mechanisms=WITH_CRAM, alice=False)
    await add_account(rig.sqlite, "alice", cram_md5=False)  # added while CRAM-MD5 was off
    before = await rig.sqlite.get("alice")
    assert code(await cram_md5(rig.conversation())) == "432 4.7.12"
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    after = await rig.sqlite.get("alice")
    assert before is not None and after is not None and after.cram_md5 is not None
    assert (after.password_hash, after.scram_sha1, after.scram_sha256) == (
        before.password_hash, before.scram_sha1, before.scram_sha256
    )
    assert code(await cram_md5(rig.conversation())) == "235 2.7.0"


async def test_transition_failure_does_not_fail_the_login(make: MakeRig) -> None:
    store = MemoryStore([Account("legacy", password_hash=LEGACY_HASHES["plain"])])
    rig = await make(store=store, alice=False)  # update_secrets raises StoreUnavailable
    assert code(await plain(rig.conversation(TLS_PEER), "legacy")) == "235 2.7.0"
    turn, _, _ = await scram(rig.conversation(), "SCRAM-SHA-256", "legacy")
    assert code(turn) == "432 4.7.12"


# -- SCRAM through the driver --------------------------------------------------------


async def test_scram_server_final_is_a_challenge_then_empty_response(make: MakeRig) -> None:
    rig = await make()
    conv = rig.conversation(PLAIN_PEER)
    client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
    turn = await conv.start("SCRAM-SHA-256", None, None)  # no initial response: "334 "
    assert turn.challenge == b""
    turn = await conv.respond(client.client_first())
    assert turn.challenge is not None and turn.challenge.startswith(b"r=" + client.cnonce.encode())
    turn = await conv.respond(client.client_final(turn.challenge))
    assert turn.reply is None and turn.challenge is not None
    assert turn.challenge.startswith(b"v=") and client.verify_server_final(turn.challenge)
    final = await conv.respond(b"")
    assert code(final) == "235 2.7.0" and final.user == "alice"


async def test_unknown_user_in_scram_looks_like_a_real_one(make: MakeRig) -> None:
    rig = await make(failure_delay=1.0)
    runs: dict[str, list[bytes]] = {}
    for name in ("nobody", "nobody", "somebody"):
        conv = rig.conversation(PLAIN_PEER)
        turn, _, server_first = await scram(conv, "SCRAM-SHA-256", name)
        assert server_first is not None, "an unknown user must still get a server-first"
        assert code(turn) == "535 5.7.8" and conv.failures == 1
        runs.setdefault(name, []).append(server_first)
    # the salt is stable per name and differs between names
    assert salt_of(runs["nobody"][0]) == salt_of(runs["nobody"][1])
    assert salt_of(runs["nobody"][0]) != salt_of(runs["somebody"][0])
    # and has the shape of a real account's: same salt length and iteration count
    _, _, real_first = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-256", "alice")
    assert real_first is not None
    for first in (runs["nobody"][0], runs["somebody"][0]):
        assert len(salt_of(first)) == len(salt_of(real_first)) == SALT_LEN
        assert iterations_of(first) == iterations_of(real_first)
    # SCRAM-SHA-1 for the same unknown name: a different (but again stable) salt
    _, _, sha1_first = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-1", "nobody")
    _, _, sha1_again = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-1", "nobody")
    assert sha1_first is not None and sha1_again is not None
    assert salt_of(sha1_first) == salt_of(sha1_again)
    assert rig.sleeps.delays == [1.0] * 5


async def test_unknown_user_and_wrong_password_in_scram_end_alike(make: MakeRig) -> None:
    rig = await make()
    wrong, _, _ = await scram(rig.conversation(PLAIN_PEER), password="wrong")
    unknown, _, _ = await scram(rig.conversation(PLAIN_PEER), user="nobody")
    assert wrong.reply == unknown.reply and code(wrong) == "535 5.7.8"


async def test_scram_plus_with_channel_binding(make: MakeRig) -> None:
    rig = await make()
    data = base64.b64decode("c2VydmVyLWVuZC1wb2ludA==") * 2
    peer = Peer("192.0.2.5", tls_active=True, bindings=ChannelBindings(tls_server_end_point=data))
    turn, _, _ = await scram(rig.conversation(peer), "SCRAM-SHA-256-PLUS",
                             cb_type="tls-server-end-point", cb_data=data)
    assert code(turn) == "235 2.7.0"
    # wrong binding data (a man in the middle): 535
    turn, _, _ = await scram(rig.conversation(peer), "SCRAM-SHA-256-PLUS",
                             cb_type="tls-server-end-point", cb_data=b"other" * 8)
    assert code(turn) == "535 5.7.8"
    # 'y' while -PLUS was advertised: a stripped offer, refused
    turn, _, _ = await scram(rig.conversation(peer), "SCRAM-SHA-256", gs2_flag="y")
    assert code(turn) == "535 5.7.8"
