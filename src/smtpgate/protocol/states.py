"""The command/state table of the SMTP session, in one place.

Theory of operation
-------------------
``State`` is where the session is in the dialogue; ``Mode`` is how it reads
its input (each mode has its own line limit, see ``readers``). Whether a
command may run now is decided here and nowhere else, by ``refusal``, which
checks in this order and returns the first reply that applies:

1. ``SEQUENCE`` of ``State.CONNECTED``: before EHLO/HELO, MAIL, RCPT, DATA,
   BDAT and AUTH get ``503 5.5.1`` (RFC 5321 section 4.1.4), *even* where a
   listener requires authentication: the client must greet first.
2. ``NEEDS_AUTH``: on a listener that requires authentication, these commands
   get ``530 5.7.0`` until AUTH succeeds (RFC 4954 section 6), whatever the
   state, so an unauthenticated client learns nothing about a transaction.
3. ``SEQUENCE`` of the other states: the ``503 5.5.1`` a known command gets
   out of order (RFC 5321 sections 3.3 and 4.1.4; RFC 3030 section 2 for
   BDAT; RFC 4954 section 4 for AUTH inside a transaction).
4. ``AUTH_PRECONDITIONS``: AUTH is an ESMTP extension (EHLO, not HELO), and
   is refused once a client has authenticated (RFC 4954 section 4). A
   listener with ``auth_after_helo`` (old devices) lets AUTH follow HELO too;
   every other refusal stays.

A command ``refusal`` lets through goes to its handler in the session.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply


class State(enum.Enum):
    # Members are singletons compared by identity, so the identity hash is theirs too;
    # Enum's own __hash__ is Python code, and SEQUENCE is looked up on every command.
    __hash__ = object.__hash__

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

# For each state, the known commands it refuses and the 503 each gets; a known
# command not listed is allowed. HELO, EHLO, RSET, NOOP, QUIT, VRFY, EXPN, HELP
# and STARTTLS run in every live state.
SEQUENCE: Mapping[State, Mapping[str, Reply]] = {
    State.CONNECTED: {
        "MAIL": r.NEED_EHLO, "RCPT": r.NEED_EHLO, "DATA": r.NEED_EHLO, "BDAT": r.NEED_EHLO,
        "AUTH": r.NEED_EHLO,
    },
    State.READY: {"RCPT": r.NEED_MAIL, "DATA": r.NEED_MAIL, "BDAT": r.NEED_MAIL},
    State.MAIL: {
        "MAIL": r.NESTED_MAIL, "DATA": r.NEED_RCPT, "BDAT": r.NEED_RCPT,
        "AUTH": r.AUTH_IN_TRANSACTION,
    },
    State.RCPT: {"MAIL": r.NESTED_MAIL, "AUTH": r.AUTH_IN_TRANSACTION},
    State.BDAT: {
        "MAIL": r.NESTED_MAIL, "RCPT": r.RCPT_AFTER_BDAT, "DATA": r.DATA_AFTER_BDAT,
        "AUTH": r.AUTH_IN_TRANSACTION,
    },
}  # State.CLOSED reads no input, so no command reaches the table there

# Commands a require_auth listener answers 530 until AUTH succeeds (RFC 4954
# section 6): all but AUTH, EHLO, HELO, NOOP, RSET, QUIT and STARTTLS.
NEEDS_AUTH = frozenset({"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP"})

# Where the table's 503 takes precedence over 530 (step 1 above).
SEQUENCE_BEFORE_AUTH = frozenset({State.CONNECTED})


class Precondition(enum.Enum):
    EHLO = "ehlo"  # the client greeted with EHLO, not HELO
    NOT_AUTHENTICATED = "not-authenticated"  # no AUTH has succeeded on this session


# RFC 4954 section 4: checked in this order once the table allows AUTH.
AUTH_PRECONDITIONS: tuple[tuple[Precondition, Reply], ...] = (
    (Precondition.EHLO, r.AUTH_NEEDS_EHLO),
    (Precondition.NOT_AUTHENTICATED, r.AUTH_ALREADY_DONE),
)


def refusal(
    state: State, verb: str, *, esmtp: bool, authenticated: bool, auth_required: bool,
    auth_after_helo: bool = False,
) -> Reply | None:
    """The reply refusing the known command ``verb`` now, or None when it may run."""
    sequence = SEQUENCE[state].get(verb)
    if sequence is not None and state in SEQUENCE_BEFORE_AUTH:
        return sequence
    if auth_required and not authenticated and verb in NEEDS_AUTH:
        return r.AUTH_REQUIRED
    if sequence is not None:
        return sequence
    if verb == "AUTH":
        met = {
            Precondition.EHLO: esmtp or auth_after_helo,
            Precondition.NOT_AUTHENTICATED: not authenticated,
        }
        for precondition, reply in AUTH_PRECONDITIONS:
            if not met[precondition]:
                return reply
    return None
