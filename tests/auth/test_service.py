"""Conversation against a real SqliteStore: every outcome, failure counting, delays, authz.

Each test drives the AUTH driver exactly as the connection does (``start``,
``respond``, ``abort``) and checks the reply, whether the attempt counted as a
failure (connection counter, throttle windows) and what delay was applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import smtpgate.auth.service as service_module
from smtpgate.auth.service import Conversation, Peer, Turn
from smtpgate.credentials import passwords
from smtpgate.credentials.users import set_password
from smtpgate.protocol.events import AuthAbort
from smtpgate.sasl.base import ChannelBindings
from tests.auth.conftest import (
    PASSWORD,
    PLAIN_PEER,
    TLS_PEER,
    FailingStore,
    MakeRig,
    add_account,
    code,
    cram_md5,
    login,
    plain,
    scram,
)
from tests.sasl.clients import ScramClient, plain_message

IP = TLS_PEER.ip

# -- every outcome through the driver -------------------------------------------


async def test_ok_plain_login_scram(make: MakeRig) -> None:
    rig = await make()
    conv = rig.conversation()
    turn = await plain(conv)
    assert code(turn) == "235 2.7.0" and turn.user == "alice"
    turn = await login(rig.conversation())
    assert code(turn) == "235 2.7.0" and turn.user == "alice"
    turn, _, _ = await scram(rig.conversation(PLAIN_PEER))
    assert code(turn) == "235 2.7.0" and turn.user == "alice"
    turn, _, _ = await scram(rig.conversation(PLAIN_PEER), "SCRAM-SHA-1")
    assert code(turn) == "235 2.7.0"
    assert rig.sleeps.delays == [] and rig.ip_failures(IP) == 0


async def test_ok_cram_md5_when_enabled(make: MakeRig) -> None:
    rig = await make(mechanisms=("CRAM-MD5", "PLAIN"))
    turn = await cram_md5(rig.conversation(PLAIN_PEER))
    assert code(turn) == "235 2.7.0" and turn.user == "alice"


async def test_plain_without_initial_response_gets_empty_challenge(make: MakeRig) -> None:
    rig = await make()
    conv = rig.conversation()
    turn = await conv.start("PLAIN", None, None)
    assert turn.challenge == b"" and turn.reply is None
    assert code(await conv.respond(plain_message("alice", PASSWORD))) == "235 2.7.0"


async def test_login_with_initial_user_asks_only_for_password(make: MakeRig) -> None:
    rig = await make()
    conv = rig.conversation()
    turn = await conv.start("LOGIN", b"alice", None)
    assert turn.challenge == b"Password:"
    assert code(await conv.respond(PASSWORD.encode())) == "235 2.7.0"


async def test_mechanism_name_is_case_insensitive(make: MakeRig) -> None:
    rig = await make()
    turn = await rig.conversation().start("plain", plain_message("alice", PASSWORD), None)
    assert code(turn) == "235 2.7.0"


Scenario = Callable[[Conversation], Awaitable[Turn]]


async def _wrong_password(conv: Conversation) -> Turn:
    return await plain(conv, password="wrong")


async def _unknown_user(conv: Conversation) -> Turn:
    return await plain(conv, user="nobody")


async def _empty_plain(conv: Conversation) -> Turn:  # AUTH PLAIN =
    return await conv.start("PLAIN", b"", None)


async def _malformed(conv: Conversation) -> Turn:
    return await conv.start("PLAIN", b"alice\x00only-one-nul", None)


async def _cancel_initial(conv: Conversation) -> Turn:  # AUTH PLAIN *
    return await conv.start("PLAIN", None, AuthAbort.CANCELLED)


async def _cancel_later(conv: Conversation) -> Turn:
    assert (await conv.start("LOGIN", None, None)).challenge == b"Username:"
    return await conv.abort(AuthAbort.CANCELLED)


async def _bad_base64_initial(conv: Conversation) -> Turn:
    return await conv.start("PLAIN", None, AuthAbort.BAD_BASE64)


async def _bad_base64_later(conv: Conversation) -> Turn:
    assert (await conv.start("PLAIN", None, None)).challenge == b""
    return await conv.abort(AuthAbort.BAD_BASE64)


async def _too_long(conv: Conversation) -> Turn:
    assert (await conv.start("PLAIN", None, None)).challenge == b""
    return await conv.abort(AuthAbort.TOO_LONG)


async def _scram_wrong_password(conv: Conversation) -> Turn:
    return (await scram(conv, password="wrong"))[0]


async def _scram_unknown_user(conv: Conversation) -> Turn:
    return (await scram(conv, user="nobody"))[0]


async def _scram_final_not_empty(conv: Conversation) -> Turn:
    client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
    turn = await conv.start("SCRAM-SHA-256", client.client_first(), None)
    assert turn.challenge is not None
    turn = await conv.respond(client.client_final(turn.challenge))
    assert turn.challenge is not None and client.verify_server_final(turn.challenge)
    return await conv.respond(b"not empty")


async def _bad_authzid(conv: Conversation) -> Turn:
    return await plain(conv, authzid="bob")


COUNTED: dict[str, tuple[Scenario, str]] = {
    "wrong-password": (_wrong_password, "535 5.7.8"),
    "unknown-user": (_unknown_user, "535 5.7.8"),
    "auth-plain-=": (_empty_plain, "535 5.7.8"),
    "bad-authzid": (_bad_authzid, "535 5.7.8"),
    "malformed": (_malformed, "501 5.5.2"),
    "cancel-initial": (_cancel_initial, "501 5.7.0"),
    "cancel-later": (_cancel_later, "501 5.7.0"),
    "bad-base64-initial": (_bad_base64_initial, "501 5.5.2"),
    "bad-base64-later": (_bad_base64_later, "501 5.5.2"),
    "too-long": (_too_long, "500 5.5.6"),
    "scram-wrong-password": (_scram_wrong_password, "535 5.7.8"),
    "scram-unknown-user": (_scram_unknown_user, "535 5.7.8"),
    "scram-final-not-empty": (_scram_final_not_empty, "501 5.5.2"),
}


@pytest.mark.parametrize("name", list(COUNTED))
async def test_counted_failure_is_delayed_and_counted(make: MakeRig, name: str) -> None:
    rig = await make(failure_delay=2.0)
    scenario, expected = COUNTED[name]
    conv = rig.conversation()
    turn = await scenario(conv)
    assert code(turn) == expected
    assert turn.user is None
    assert conv.failures == 1
    assert rig.sleeps.delays == [2.0]  # failure_delay before the answer
    assert rig.ip_failures(IP) == 1


BOUND_PEER = Peer(IP, tls_active=True, bindings=ChannelBindings(tls_exporter=b"\x07" * 32))
# RFC 5802 section 6: well-formed, but the server MUST fail them.
CONTRADICTIONS: dict[str, tuple[str, Peer, dict[str, Any]]] = {
    "plus-with-n": ("SCRAM-SHA-256-PLUS", BOUND_PEER, {"gs2_flag": "n"}),
    "plus-with-y": ("SCRAM-SHA-256-PLUS", BOUND_PEER, {"gs2_flag": "y"}),
    "p-without-tls": ("SCRAM-SHA-256", PLAIN_PEER,
                      {"cb_type": "tls-exporter", "cb_data": b"\x07" * 32}),
    "p-on-plain-scram": ("SCRAM-SHA-1", BOUND_PEER,
                         {"cb_type": "tls-exporter", "cb_data": b"\x07" * 32}),
    "y-where-plus-offered": ("SCRAM-SHA-256", BOUND_PEER, {"gs2_flag": "y"}),
}


@pytest.mark.parametrize("name", list(CONTRADICTIONS))
async def test_channel_binding_flag_contradiction_is_a_counted_535(
    make: MakeRig, name: str
) -> None:
    """A gs2 flag that contradicts the mechanism or the connection is a failed login
    (535 5.7.8, delayed, counted), not a syntax error (501 5.5.2)."""
    rig = await make(failure_delay=2.0)
    mechanism, peer, client_args = CONTRADICTIONS[name]
    conv = rig.service.conversation(peer)
    client = ScramClient(mechanism, "alice", PASSWORD, **client_args)
    turn = await conv.start(mechanism, client.client_first(), None)
    assert code(turn) == "535 5.7.8"
    assert conv.failures == 1 and rig.sleeps.delays == [2.0]
    assert rig.ip_failures(IP) == 1


async def test_cram_md5_initial_response_is_counted_501(make: MakeRig) -> None:
    rig = await make(mechanisms=("CRAM-MD5", "PLAIN"), failure_delay=1.5)
    conv = rig.conversation()
    assert code(await conv.start("CRAM-MD5", b"alice 0123", None)) == "501 5.7.0"
    assert code(await rig.conversation().start("CRAM-MD5", b"", None)) == "501 5.7.0"  # "="
    assert conv.failures == 1 and rig.sleeps.delays == [1.5, 1.5]
    assert rig.store.gets == 0


# -- outcomes that are not failures -----------------------------------------------


async def _unknown_mechanism(conv: Conversation) -> Turn:
    return await conv.start("XOAUTH2", b"x", None)


async def _disabled_cram(conv: Conversation) -> Turn:
    return await conv.start("CRAM-MD5", None, None)


async def _plain_without_tls(conv: Conversation) -> Turn:
    return await conv.start("PLAIN", plain_message("alice", "wrong"), None)


async def _plus_without_tls(conv: Conversation) -> Turn:
    return await conv.start("SCRAM-SHA-256-PLUS", None, None)


async def _login_without_tls(conv: Conversation) -> Turn:
    return await conv.start("LOGIN", b"alice", None)


NOT_COUNTED: dict[str, tuple[Scenario, Peer, str]] = {
    "unknown-mechanism": (_unknown_mechanism, TLS_PEER, "504 5.5.4"),
    "disabled-cram-md5": (_disabled_cram, TLS_PEER, "504 5.5.4"),
    "plain-without-tls": (_plain_without_tls, PLAIN_PEER, "538 5.7.11"),
    "login-without-tls": (_login_without_tls, PLAIN_PEER, "538 5.7.11"),
    "plus-without-tls": (_plus_without_tls, PLAIN_PEER, "538 5.7.11"),
}


@pytest.mark.parametrize("name", list(NOT_COUNTED))
async def test_gate_outcomes_are_not_counted(make: MakeRig, name: str) -> None:
    rig = await make()
    scenario, peer, expected = NOT_COUNTED[name]
    conv = rig.conversation(peer)
    for _ in range(5):  # far beyond max_failures_per_connection = 3
        assert code(await scenario(conv)) == expected
    assert conv.failures == 0 and rig.sleeps.delays == [] and rig.ip_failures(peer.ip) == 0
    assert rig.store.gets == rig.store.peeks == 0  # refused before any lookup


async def test_store_unavailable_is_454_and_not_counted(make: MakeRig) -> None:
    failing = FailingStore()
    rig = await make(store=failing, alice=False)
    conv = rig.conversation()
    for _ in range(4):
        assert code(await plain(conv)) == "454 4.7.0"
    turn, _, _ = await scram(conv)
    assert code(turn) == "454 4.7.0"
    assert code(await login(conv)) == "454 4.7.0"
    assert failing.gets == 6
    assert conv.failures == 0 and rig.sleeps.delays == [] and rig.ip_failures(IP) == 0
    assert rig.login_failures("alice") == 0


async def test_weak_for_account_only_after_correct_credentials(make: MakeRig) -> None:
    rig = await make()
    await add_account(rig.sqlite, "scanner", "scanner secret", allow=("SCRAM-SHA-256",))
    conv = rig.conversation()
    # correct password, mechanism not allowed: 534, not counted
    assert code(await plain(conv, "scanner", "scanner secret")) == "534 5.7.9"
    assert code(await login(conv, "scanner", "scanner secret")) == "534 5.7.9"
    turn, _, _ = await scram(conv, "SCRAM-SHA-1", "scanner", "scanner secret")
    assert code(turn) == "534 5.7.9"
    assert conv.failures == 0 and rig.sleeps.delays == []
    # wrong password with a disallowed mechanism: still 535, counted
    assert code(await plain(conv, "scanner", "wrong")) == "535 5.7.8"
    assert conv.failures == 1 and rig.sleeps.delays == [2.0]
    # the allowed mechanism works, and its -PLUS variant counts as it
    turn, _, _ = await scram(conv, "SCRAM-SHA-256", "scanner", "scanner secret")
    assert code(turn) == "235 2.7.0"
    bound = Peer(IP, tls_active=True, bindings=ChannelBindings(tls_server_end_point=b"E" * 32))
    turn, _, _ = await scram(rig.conversation(bound), "SCRAM-SHA-256-PLUS", "scanner",
                             "scanner secret", cb_type="tls-server-end-point", cb_data=b"E" * 32)
    assert code(turn) == "235 2.7.0"


# -- max_failures_per_connection ----------------------------------------------------


async def test_nth_failure_is_421_and_closes(make: MakeRig) -> None:
    rig = await make(max_failures_per_connection=3, failure_delay=0.5)
    conv = rig.conversation()
    first = await plain(conv, password="wrong")
    second = await plain(conv, user="nobody")
    third = await plain(conv, password="wrong again")
    assert [code(first), code(second)] == ["535 5.7.8", "535 5.7.8"]
    assert code(third) == "421 4.7.0"
    assert rig.sleeps.delays == [0.5, 0.5, 0.5]  # the 421 is delayed too


async def test_malformed_and_cancel_count_towards_421(make: MakeRig) -> None:
    rig = await make(max_failures_per_connection=3)
    conv = rig.conversation()
    assert code(await _malformed(conv)) == "501 5.5.2"
    assert code(await _cancel_later(conv)) == "501 5.7.0"
    turn = await _bad_base64_later(conv)
    assert code(turn) == "421 4.7.0"


async def test_uncounted_outcomes_do_not_bring_421_closer(make: MakeRig) -> None:
    rig = await make(max_failures_per_connection=2)
    await add_account(rig.sqlite, "scanner", "scanner secret", allow=("LOGIN",))
    conv = rig.conversation()
    for _ in range(3):
        assert code(await _unknown_mechanism(conv)) == "504 5.5.4"
        assert code(await plain(conv, "scanner", "scanner secret")) == "534 5.7.9"
    assert code(await plain(conv, password="wrong")) == "535 5.7.8"
    assert code(await plain(conv, password="wrong")) == "421 4.7.0"


async def test_max_failures_one_closes_at_first_failure(make: MakeRig) -> None:
    rig = await make(max_failures_per_connection=1)
    turn = await plain(rig.conversation(), password="wrong")
    assert code(turn) == "421 4.7.0"


async def test_success_is_not_a_failure_and_keeps_the_count(make: MakeRig) -> None:
    rig = await make(max_failures_per_connection=3)
    conv = rig.conversation()
    assert code(await plain(conv, password="wrong")) == "535 5.7.8"
    assert code(await plain(conv)) == "235 2.7.0"
    assert conv.failures == 1


# -- authorization identity -------------------------------------------------------


@pytest.mark.parametrize(
    ("authzid", "expected", "user"),
    [
        ("", "235 2.7.0", "alice"),
        ("alice", "235 2.7.0", "alice"),
        ("sales@example.org", "235 2.7.0", "sales@example.org"),
        ("bob", "535 5.7.8", None),
        ("Alice", "535 5.7.8", None),
    ],
)
async def test_authzid_rules_plain(make: MakeRig, authzid: str, expected: str,
                                   user: str | None) -> None:
    rig = await make(alice=False)
    await add_account(rig.sqlite, "alice", may_act_as=("sales@example.org",))
    conv = rig.conversation()
    turn = await plain(conv, authzid=authzid)
    assert code(turn) == expected and turn.user == user
    assert conv.failures == (0 if user else 1)


@pytest.mark.parametrize(
    ("authzid", "expected"),
    [("", "235 2.7.0"), ("alice", "235 2.7.0"), ("sales@example.org", "235 2.7.0"),
     ("bob", "535 5.7.8")],
)
async def test_authzid_rules_scram(make: MakeRig, authzid: str, expected: str) -> None:
    rig = await make(alice=False)
    await add_account(rig.sqlite, "alice", may_act_as=("sales@example.org",))
    turn, _, _ = await scram(rig.conversation(), authzid=authzid)
    assert code(turn) == expected
    if expected.startswith("235"):
        assert turn.user == (authzid or "alice")


async def test_bad_authzid_with_disallowed_mechanism_is_535(make: MakeRig) -> None:
    # authzid is checked before the account's mechanism policy: 535, not 534
    rig = await make()
    await add_account(rig.sqlite, "scanner", "scanner secret", allow=("LOGIN",))
    turn = await plain(rig.conversation(), "scanner", "scanner secret", authzid="alice")
    assert code(turn) == "535 5.7.8"


# -- the verified-credentials cache ----------------------------------------------


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = passwords.verify_account_password

    def counting(account: Any, password: str) -> bool:
        calls.append(account.name)
        return real(account, password)

    monkeypatch.setattr(service_module, "verify_account_password", counting)
    return calls


async def test_second_login_is_served_from_cache(make: MakeRig, verify_calls: list[str]) -> None:
    rig = await make()
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    assert verify_calls == ["alice"]
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    assert code(await login(rig.conversation())) == "235 2.7.0"
    assert verify_calls == ["alice"]


async def test_cache_never_accepts_a_wrong_password(make: MakeRig,
                                                    verify_calls: list[str]) -> None:
    rig = await make()
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    assert code(await plain(rig.conversation(), password="wrong")) == "535 5.7.8"
    assert verify_calls == ["alice", "alice"]


async def test_cache_invalidated_by_set_password(make: MakeRig, verify_calls: list[str]) -> None:
    rig = await make()
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    await set_password(rig.sqlite, "alice", "a new password", cram_md5=False)
    assert code(await plain(rig.conversation())) == "535 5.7.8"  # old password: gone at once
    assert code(await plain(rig.conversation(), password="a new password")) == "235 2.7.0"
    assert code(await plain(rig.conversation(), password="a new password")) == "235 2.7.0"
    assert verify_calls == ["alice", "alice", "alice"]  # the new one is cached again
    turn, _, _ = await scram(rig.conversation(), password="a new password")
    assert code(turn) == "235 2.7.0"  # SCRAM secrets were replaced too
    turn, _, _ = await scram(rig.conversation())
    assert code(turn) == "535 5.7.8"


async def test_deleted_user_cannot_log_in_from_cache(make: MakeRig) -> None:
    rig = await make()
    assert code(await plain(rig.conversation())) == "235 2.7.0"
    await rig.sqlite.delete("alice")
    assert code(await plain(rig.conversation())) == "535 5.7.8"


async def test_unknown_user_spends_a_dummy_verification(make: MakeRig,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rig = await make()
    dummies: list[str] = []
    real = passwords.verify_dummy
    def counting(password: str) -> None:
        dummies.append(password)
        real(password)

    monkeypatch.setattr(service_module, "verify_dummy", counting)
    wrong = await plain(rig.conversation(), password="guess")
    unknown = await plain(rig.conversation(), user="nobody", password="guess")
    assert dummies == ["guess"]
    assert wrong.reply == unknown.reply  # the very same reply object, text included

