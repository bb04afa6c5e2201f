"""The command/state table of the SMTP session, in one place.

Theory of operation
-------------------
``State`` is where the session is in the dialogue; ``Mode`` is how it reads
its input (Stalwart's idea): each mode has its own line limit. ``ALLOWED``
says which commands a state accepts; a known command outside the table gets
the reply from ``sequence_error`` (503 5.5.1, RFC 5321 section 4.3.2), in one
place. Whether a command also needs authentication (530 5.7.0, RFC 4954
section 6) is ``NEEDS_AUTH``; the 503 of the table takes precedence over it
(SPEC section 4).
"""

from __future__ import annotations

import enum

from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply


class State(enum.Enum):
    CONNECTED = "connected"  # greeted by us, no EHLO/HELO yet (also after STARTTLS)
    READY = "ready"  # after EHLO/HELO, no mail transaction
    MAIL = "mail"  # after MAIL FROM
    RCPT = "rcpt"  # after at least one accepted RCPT TO
    BDAT = "bdat"  # between BDAT chunks of one message
    CLOSED = "closed"  # after QUIT, 421 or STARTTLS: the host closes or starts TLS


class Mode(enum.Enum):
    COMMAND = "command"  # CRLF-terminated command lines
    AUTH_RESPONSE = "auth"  # one base64 line answering a 334 challenge
    DATA = "data"  # a DATA body up to <CRLF>.<CRLF>
    BDAT = "bdat"  # a counted BDAT chunk
    DISCARD_LINE = "discard"  # an overlong line, dropped up to its LF


# RFC 5321 section 4.5.3.1.4: 512 octets per command line including CRLF;
# RFC 4954 section 4: AUTH lines up to 12288 octets.
COMMAND_LINE_LIMIT = 512
AUTH_LINE_LIMIT = 12288

KNOWN_COMMANDS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
     "EXPN", "HELP", "STARTTLS", "AUTH"}
)

_ANYWHERE = frozenset({"HELO", "EHLO", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS"})

ALLOWED: dict[State, frozenset[str]] = {
    State.CONNECTED: _ANYWHERE,
    State.READY: _ANYWHERE | {"MAIL", "AUTH"},
    State.MAIL: _ANYWHERE | {"RCPT"},
    State.RCPT: _ANYWHERE | {"RCPT", "DATA", "BDAT"},
    State.BDAT: _ANYWHERE | {"BDAT"},
    State.CLOSED: frozenset(),
}

# Commands a require_auth listener answers 530 until AUTH succeeds (SPEC section 4).
NEEDS_AUTH = frozenset({"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP"})


def sequence_error(state: State, verb: str) -> Reply:
    """The 503 reply for a known command the table does not allow in ``state``."""
    if state is State.CONNECTED:
        return r.NEED_EHLO
    if verb == "AUTH":
        return r.AUTH_IN_TRANSACTION
    if verb == "MAIL":
        return r.NESTED_MAIL
    if verb == "RCPT":
        return r.NEED_MAIL
    if verb in ("DATA", "BDAT"):
        return r.NEED_MAIL if state is State.READY else r.NEED_RCPT
    return r.BAD_SEQUENCE
