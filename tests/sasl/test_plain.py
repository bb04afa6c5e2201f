"""PLAIN (RFC 4616)."""

from __future__ import annotations

import pytest

from smtpgate.sasl.base import (
    Challenge,
    CramMd5Secret,
    Failure,
    FailureKind,
    MechanismContext,
    VerifyPassword,
)
from smtpgate.sasl.plain import Plain
from tests.sasl.clients import plain_message


def _plain() -> Plain:
    return Plain(MechanismContext())


def test_initial_response() -> None:
    step = _plain().start(b"\x00tim\x00tanstaaftanstaaf")
    assert step == VerifyPassword(authcid="tim", authzid="", password="tanstaaftanstaaf")


def test_rfc4616_section4_example_with_authzid() -> None:
    # RFC 4616 section 4: "Kurt" acting as "Ursel", password "xipj3plmq"
    step = _plain().start(b"Ursel\x00Kurt\x00xipj3plmq")
    assert step == VerifyPassword(authcid="Kurt", authzid="Ursel", password="xipj3plmq")


def test_no_initial_response_gets_empty_challenge() -> None:
    mech = _plain()
    assert mech.start(None) == Challenge(b"")
    step = mech.step(plain_message("alice", "pw"))
    assert step == VerifyPassword(authcid="alice", authzid="", password="pw")


@pytest.mark.parametrize("via_step", [False, True])
def test_empty_message_is_invalid(via_step: bool) -> None:
    mech = _plain()
    if via_step:
        assert mech.start(None) == Challenge(b"")
        step = mech.step(b"")
    else:
        step = mech.start(b"")  # AUTH PLAIN =
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID


@pytest.mark.parametrize(
    "message",
    [
        b"alice",  # no NUL
        b"\x00alice",  # one NUL
        b"\x00alice\x00pw\x00",  # three NULs
        b"\x00\x00pw",  # empty authcid
        b"\x00al\xffice\x00pw",  # invalid UTF-8
        b"\xc3(\x00alice\x00pw",  # invalid UTF-8 in authzid
        b"\x00alice\x00p\xed\xa0\x80w",  # UTF-8-encoded surrogate
        b"\x00al\x07ice\x00pw",  # SASLprep: prohibited control in authcid
        b"\x00alice\x00p\x07w",  # SASLprep: prohibited control in password
        b"\x00\xc2\xad\x00pw",  # authcid empty after SASLprep
    ],
)
def test_malformed(message: bytes) -> None:
    step = _plain().start(message)
    assert isinstance(step, Failure) and step.kind is FailureKind.MALFORMED
    assert "alice" not in step.reason and "pw" not in step.reason


def test_empty_password_is_invalid() -> None:
    step = _plain().start(b"\x00alice\x00")
    assert isinstance(step, Failure) and step.kind is FailureKind.INVALID


def test_saslprep_applied_to_authcid_and_password() -> None:
    step = _plain().start(plain_message("\u2168", "I\u00adX pass\u00a0word"))
    assert step == VerifyPassword(authcid="IX", authzid="", password="IX pass word")


def test_unassigned_code_points_allowed_as_query() -> None:
    step = _plain().start(plain_message("alice", "pw\U0001f600"))
    assert step == VerifyPassword(authcid="alice", authzid="", password="pw\U0001f600")


def test_authzid_passed_through_unprepared() -> None:
    step = _plain().start(plain_message("alice", "pw", authzid="\u2168"))
    assert isinstance(step, VerifyPassword) and step.authzid == "\u2168"


def test_steps_after_the_end_fail() -> None:
    mech = _plain()
    assert isinstance(mech.start(plain_message("alice", "pw")), VerifyPassword)
    assert isinstance(mech.step(plain_message("alice", "pw")), Failure)
    assert isinstance(mech.start(plain_message("alice", "pw")), Failure)


def test_step_before_start_and_resume_fail() -> None:
    assert isinstance(_plain().step(plain_message("alice", "pw")), Failure)
    assert isinstance(_plain().resume(CramMd5Secret(contexts=b"\x00" * 32)), Failure)


def test_password_hidden_in_repr() -> None:
    step = _plain().start(plain_message("alice", "hunter2"))
    assert "hunter2" not in repr(step)
