"""Typed AUTH outcomes and the one table that maps them to replies (README: the reply contract)."""

from __future__ import annotations

import enum

from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"  # wrong password, unknown user, bad authzid, bad proof
    MALFORMED = "malformed"  # the client's SASL message broke the mechanism's syntax
    BAD_BASE64 = "bad-base64"
    CANCELLED = "cancelled"
    TOO_LONG = "too-long"
    UNEXPECTED_INITIAL = "unexpected-initial"  # initial response to a server-first mechanism
    UNKNOWN_MECHANISM = "unknown-mechanism"
    ENCRYPTION_REQUIRED = "encryption-required"
    WEAK_FOR_ACCOUNT = "weak-for-account"
    TRANSITION_NEEDED = "transition-needed"
    STORE_UNAVAILABLE = "store-unavailable"
    BLOCKED = "blocked"
    BUSY = "busy"  # no room in the hashing queue (auth.fair)


REPLIES: dict[Outcome, Reply] = {
    Outcome.OK: r.AUTH_SUCCEEDED,
    Outcome.INVALID: r.AUTH_INVALID,
    Outcome.MALFORMED: r.AUTH_MALFORMED,
    Outcome.BAD_BASE64: r.AUTH_BAD_BASE64,
    Outcome.CANCELLED: r.AUTH_CANCELLED,
    Outcome.TOO_LONG: r.AUTH_LINE_TOO_LONG,
    Outcome.UNEXPECTED_INITIAL: r.AUTH_UNEXPECTED_INITIAL,
    Outcome.UNKNOWN_MECHANISM: r.AUTH_UNKNOWN_MECHANISM,
    Outcome.ENCRYPTION_REQUIRED: r.ENCRYPTION_REQUIRED,
    Outcome.WEAK_FOR_ACCOUNT: r.AUTH_TOO_WEAK,
    Outcome.TRANSITION_NEEDED: r.TRANSITION_NEEDED,
    Outcome.STORE_UNAVAILABLE: r.TEMPORARY_AUTH_FAILURE,
    Outcome.BLOCKED: r.AUTH_BLOCKED,
    Outcome.BUSY: r.TEMPORARY_AUTH_FAILURE,
}

# Failed AUTHs for failure_delay, max_failures_per_connection and the IP/login
# windows: 535 and malformed exchanges (501, 500 5.5.6) and cancels. Not 432,
# 454, 504, 534, 538: nothing about the password was learned (README).
COUNTED_FAILURES = frozenset(
    {
        Outcome.INVALID,
        Outcome.MALFORMED,
        Outcome.BAD_BASE64,
        Outcome.CANCELLED,
        Outcome.TOO_LONG,
        Outcome.UNEXPECTED_INITIAL,
    }
)
