"""The outcome -> reply table (SPEC section 4) and which outcomes count as failures."""

from __future__ import annotations

import pytest

from smtpgate.auth.outcomes import COUNTED_FAILURES, REPLIES, Outcome

EXPECTED = {
    Outcome.OK: "235 2.7.0",
    Outcome.INVALID: "535 5.7.8",
    Outcome.MALFORMED: "501 5.5.2",
    Outcome.BAD_BASE64: "501 5.5.2",
    Outcome.CANCELLED: "501 5.7.0",
    Outcome.TOO_LONG: "500 5.5.6",
    Outcome.UNEXPECTED_INITIAL: "501 5.7.0",
    Outcome.UNKNOWN_MECHANISM: "504 5.5.4",
    Outcome.ENCRYPTION_REQUIRED: "538 5.7.11",
    Outcome.WEAK_FOR_ACCOUNT: "534 5.7.9",
    Outcome.TRANSITION_NEEDED: "432 4.7.12",
    Outcome.STORE_UNAVAILABLE: "454 4.7.0",
    Outcome.BLOCKED: "454 4.7.0",
    Outcome.BUSY: "454 4.7.0",
}


def test_every_outcome_has_a_reply() -> None:
    assert set(REPLIES) == set(Outcome) == set(EXPECTED)


@pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.value)
def test_outcome_reply(outcome: Outcome) -> None:
    reply = REPLIES[outcome]
    assert f"{reply.code} {reply.enhanced}" == EXPECTED[outcome]
    assert reply.to_bytes().startswith(EXPECTED[outcome].encode() + b" ")
    assert reply.to_bytes().endswith(b"\r\n")


def test_counted_failures_per_spec() -> None:
    # 535, malformed exchanges (501, and the overlong 500 5.5.6) and cancels count;
    # 432, 454, 504, 534, 538 do not: nothing about the password was learned.
    assert {
        Outcome.INVALID, Outcome.MALFORMED, Outcome.BAD_BASE64, Outcome.CANCELLED,
        Outcome.UNEXPECTED_INITIAL,
    } <= COUNTED_FAILURES
    for outcome in COUNTED_FAILURES:
        assert REPLIES[outcome].code in (500, 501, 535)
    not_counted = set(Outcome) - COUNTED_FAILURES
    assert {REPLIES[o].code for o in not_counted} == {235, 432, 454, 504, 534, 538}
