"""LOGIN (draft-murchison-sasl-login)."""

from __future__ import annotations

import base64

import pytest

from smtpgate.sasl.base import (
    Challenge,
    CramMd5Secret,
    Failure,
    FailureKind,
    MechanismContext,
    VerifyPassword,
)
from smtpgate.sasl.login import Login


def _login() -> Login:
    return Login(MechanismContext())


def test_prompts_are_exactly_what_printers_expect() -> None:
    mech = _login()
    first = mech.start(None)
    assert isinstance(first, Challenge)
    assert base64.b64encode(first.data) == b"VXNlcm5hbWU6"  # SPEC section 4
    second = mech.step(b"alice")
    assert isinstance(second, Challenge)
    assert base64.b64encode(second.data) == b"UGFzc3dvcmQ6"
    assert mech.step(b"pw") == VerifyPassword(authcid="alice", authzid="", password="pw")


def test_user_inline_asks_only_for_password() -> None:
    mech = _login()
    assert mech.start(b"scanner") == Challenge(b"Password:")
    assert mech.step(b"pw") == VerifyPassword(authcid="scanner", authzid="", password="pw")


def test_empty_initial_response_is_an_empty_user() -> None:
    mech = _login()
    assert mech.start(b"") == Challenge(b"Password:")
    assert mech.step(b"pw") == VerifyPassword(authcid="", authzid="", password="pw")


def test_empty_password_goes_to_the_host() -> None:
    mech = _login()
    mech.start(b"alice")
    assert mech.step(b"") == VerifyPassword(authcid="alice", authzid="", password="")


def test_saslprep_applied() -> None:
    mech = _login()
    mech.start("\u2168".encode())
    step = mech.step("pass\u00a0word".encode())
    assert step == VerifyPassword(authcid="IX", authzid="", password="pass word")


@pytest.mark.parametrize("bad", [b"al\xffice", b"al\x00ice", b"al\x07ice"])
def test_malformed_username_fails_at_once(bad: bytes) -> None:
    mech = _login()
    mech.start(None)
    step = mech.step(bad)
    assert isinstance(step, Failure) and step.kind is FailureKind.MALFORMED
    assert isinstance(mech.step(b"pw"), Failure)


@pytest.mark.parametrize("bad", [b"p\xffw", b"p\x00w"])
def test_malformed_password(bad: bytes) -> None:
    mech = _login()
    mech.start(b"alice")
    step = mech.step(bad)
    assert isinstance(step, Failure) and step.kind is FailureKind.MALFORMED


def test_steps_after_the_end_fail() -> None:
    mech = _login()
    mech.start(b"alice")
    assert isinstance(mech.step(b"pw"), VerifyPassword)
    assert isinstance(mech.step(b"pw"), Failure)
    assert isinstance(mech.start(None), Failure)


def test_step_before_start_and_resume_fail() -> None:
    assert isinstance(_login().step(b"alice"), Failure)
    mech = _login()
    mech.start(None)
    assert isinstance(mech.resume(CramMd5Secret(contexts=b"\x00" * 32)), Failure)
