"""Events the session hands to its host, and how the host must answer each.

Events marked *awaits a reply* pause the session: it reads no further input
until the host answers with the method named, so pipelined commands are
answered in order (RFC 2920).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from smtpgate.protocol.replies import Reply


@dataclass(frozen=True, slots=True)
class MailFrom:
    """Awaits a reply: ``accept()`` or ``reject(reply)``."""

    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class RcptTo:
    """Awaits a reply: ``accept()`` or ``reject(reply)``."""

    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class DataStart:
    """Awaits a reply: ``accept()`` (354, or nothing for BDAT) or ``reject(reply)``.

    For BDAT the chunk that follows is still read (and dropped) after a reject.
    """

    bdat: bool


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message bytes, already unstuffed. No reply."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DataEnd:
    """Awaits a reply: ``reply(r)`` with the outcome (250 once the message is durable).

    ``rejection`` is set when the session already knows the message must be
    refused (too big, bare CR/LF): the host aborts delivery and replies with it.
    """

    rejection: Reply | None = None


class AuthAbort(enum.Enum):
    CANCELLED = "cancelled"  # the client sent "*": 501 5.7.0
    BAD_BASE64 = "bad-base64"  # 501 5.5.2
    TOO_LONG = "too-long"  # 500 5.5.6


@dataclass(frozen=True, slots=True)
class AuthStart:
    """Awaits ``auth_challenge(data)`` or ``auth_finish(reply, user)``.

    ``initial`` is None when no initial response was sent, b"" for "=".
    ``problem`` is set when the initial response was "*" or not base64.
    """

    mechanism: str
    initial: bytes | None = field(repr=False)
    problem: AuthAbort | None = None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """Awaits ``auth_challenge(data)`` or ``auth_finish(reply, user)``."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthAborted:
    """The client broke off the exchange. Awaits ``auth_finish(reply, None)``."""

    reason: AuthAbort


@dataclass(frozen=True, slots=True)
class StartTls:
    """The 220 is queued; the host sends it, then hands the socket to TLS and
    starts a *new* session. Whatever the client sent after STARTTLS is dropped."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (QUIT, 421): send what is queued, then close."""


Event = (
    MailFrom | RcptTo | DataStart | DataChunk | DataEnd | AuthStart | AuthResponse
    | AuthAborted | StartTls | Closed
)
