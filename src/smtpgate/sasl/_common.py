"""Small helpers shared by the mechanism modules (internal)."""

from __future__ import annotations

import secrets

from smtpgate.sasl.base import Failure, FailureKind, MechanismContext

# Returned when the host drives a mechanism out of order (a step after the
# exchange finished, ``resume`` where no secret was asked for, ...).
OUT_OF_SEQUENCE = Failure(FailureKind.MALFORMED, "step out of sequence")


def malformed(reason: str) -> Failure:
    return Failure(FailureKind.MALFORMED, reason)


def invalid(reason: str) -> Failure:
    return Failure(FailureKind.INVALID, reason)


def make_nonce(context: MechanismContext) -> str:
    """A fresh server nonce: the context's test hook, else 144 random bits."""
    if context.nonce is not None:
        return context.nonce()
    return secrets.token_urlsafe(18)


def decode_utf8(data: bytes) -> str | None:
    """Strict UTF-8 decoding; None when ``data`` is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
