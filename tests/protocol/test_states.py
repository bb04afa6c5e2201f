"""The command/state table, checked directly and through a live session.

The expected table below is written out by hand from RFC 5321 section 4.1.4,
RFC 3030 and RFC 4954 section 4, independently of ``states.ALLOWED``: a change
to the table must change this file too.
"""

from __future__ import annotations

import pytest

from smtpgate.protocol import replies as r
from smtpgate.protocol.states import (
    ALLOWED,
    KNOWN_COMMANDS,
    NEEDS_AUTH,
    State,
    sequence_error,
)
from tests.protocol.host import MemoryHost, codes, make_host

ANYWHERE = {"HELO", "EHLO", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS"}
EXPECTED_ALLOWED: dict[State, set[str]] = {
    State.CONNECTED: ANYWHERE,
    State.READY: ANYWHERE | {"MAIL", "AUTH"},
    State.MAIL: ANYWHERE | {"RCPT"},
    State.RCPT: ANYWHERE | {"RCPT", "DATA", "BDAT"},
    State.BDAT: ANYWHERE | {"BDAT"},
    State.CLOSED: set(),
}
ALL_COMMANDS = sorted(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
     "EXPN", "HELP", "STARTTLS", "AUTH"}
)
LIVE_STATES = [State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.BDAT]
PAIRS = [(state, verb) for state in State for verb in ALL_COMMANDS]


def test_known_commands_are_exactly_the_issue_list() -> None:
    assert set(ALL_COMMANDS) == KNOWN_COMMANDS


def test_table_has_every_state() -> None:
    assert set(ALLOWED) == set(State)


@pytest.mark.parametrize(("state", "verb"), PAIRS, ids=[f"{s.name}-{v}" for s, v in PAIRS])
def test_allowed_pair(state: State, verb: str) -> None:
    assert (verb in ALLOWED[state]) == (verb in EXPECTED_ALLOWED[state])


def _expected_sequence_error(state: State, verb: str) -> r.Reply:
    if state is State.CONNECTED:
        return r.NEED_EHLO
    return {
        "AUTH": r.AUTH_IN_TRANSACTION,
        "MAIL": r.NESTED_MAIL,
        "RCPT": r.NEED_MAIL,
        "DATA": r.NEED_MAIL if state is State.READY else r.NEED_RCPT,
        "BDAT": r.NEED_MAIL if state is State.READY else r.NEED_RCPT,
    }.get(verb, r.BAD_SEQUENCE)


@pytest.mark.parametrize(("state", "verb"), PAIRS, ids=[f"{s.name}-{v}" for s, v in PAIRS])
def test_sequence_error_pair(state: State, verb: str) -> None:
    if verb in EXPECTED_ALLOWED[state]:
        return  # sequence_error is only consulted for refused pairs
    reply = sequence_error(state, verb)
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert reply == _expected_sequence_error(state, verb)


def test_needs_auth_is_exactly_the_spec_list() -> None:
    # SPEC section 4: 530 for any command but AUTH, EHLO, HELO, NOOP, RSET, QUIT, STARTTLS.
    exempt = {"AUTH", "EHLO", "HELO", "NOOP", "RSET", "QUIT", "STARTTLS"}
    assert KNOWN_COMMANDS - exempt == NEEDS_AUTH
    assert {"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP"} == NEEDS_AUTH


# --- the same table, through a session ---------------------------------------

COMMAND_LINE = {
    "HELO": b"HELO client.test",
    "EHLO": b"EHLO client.test",
    "MAIL": b"MAIL FROM:<a@example.org>",
    "RCPT": b"RCPT TO:<b@example.org>",
    "DATA": b"DATA",
    "BDAT": b"BDAT 0",
    "RSET": b"RSET",
    "NOOP": b"NOOP",
    "QUIT": b"QUIT",
    "VRFY": b"VRFY someone",
    "EXPN": b"EXPN list",
    "HELP": b"HELP",
    "STARTTLS": b"STARTTLS",
    "AUTH": b"AUTH PLAIN",
}
# The first reply each command gets when the table allows it (require_auth off).
ALLOWED_REPLY = {
    "HELO": "250",
    "EHLO": "250",
    "MAIL": "250 2.1.0",
    "RCPT": "250 2.1.5",
    "DATA": "354",
    "BDAT": "250 2.0.0",
    "RSET": "250 2.0.0",
    "NOOP": "250 2.0.0",
    "QUIT": "221 2.0.0",
    "VRFY": "252 2.5.0",
    "EXPN": "502 5.5.1",
    "HELP": "214 2.0.0",
    "STARTTLS": "220 2.0.0",
    "AUTH": "334",
}


def host_in(state: State, **params: object) -> MemoryHost:
    """A session driven into ``state`` with ordinary commands."""
    params.setdefault("require_auth", False)
    params.setdefault("starttls_offered", True)
    params.setdefault("auth_mechanisms", ("PLAIN",))
    host = make_host(**params)
    steps = {
        State.CONNECTED: b"",
        State.READY: b"EHLO c\r\n",
        State.MAIL: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n",
        State.RCPT: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n",
        State.BDAT: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"BDAT 1\r\nx",
    }[state]
    out = host.feed(steps)
    assert all(c.startswith("250") for c in codes(out)), out
    assert host.session.state is state
    return host


LIVE_PAIRS = [(state, verb) for state in LIVE_STATES for verb in ALL_COMMANDS]


@pytest.mark.parametrize(
    ("state", "verb"), LIVE_PAIRS, ids=[f"{s.name}-{v}" for s, v in LIVE_PAIRS]
)
def test_session_follows_table(state: State, verb: str) -> None:
    host = host_in(state)
    out = host.feed(COMMAND_LINE[verb] + b"\r\n")
    if verb in EXPECTED_ALLOWED[state]:
        assert codes(out)[0] == ALLOWED_REPLY[verb], out
    else:
        assert out == _expected_sequence_error(state, verb).to_bytes()
        assert host.session.state is state  # a refused command changes nothing
        assert host.session.errors == 1


AUTH_PAIRS = [(state, verb) for state in (State.CONNECTED, State.READY) for verb in ALL_COMMANDS]


@pytest.mark.parametrize(
    ("state", "verb"), AUTH_PAIRS, ids=[f"{s.name}-{v}" for s, v in AUTH_PAIRS]
)
def test_session_needs_auth(state: State, verb: str) -> None:
    """require_auth, no AUTH yet (MAIL/RCPT/BDAT states are unreachable so).

    Before EHLO the table's 503 beats 530 (SPEC section 4); after EHLO every
    NEEDS_AUTH command gets 530 5.7.0, even one the table would refuse.
    """
    host = host_in(state, require_auth=True)
    out = host.feed(COMMAND_LINE[verb] + b"\r\n")
    if state is State.CONNECTED and verb not in EXPECTED_ALLOWED[state]:
        assert out == r.NEED_EHLO.to_bytes()
    elif verb in NEEDS_AUTH:
        assert out == r.AUTH_REQUIRED.to_bytes()
        assert codes(out) == ["530 5.7.0"]
    elif verb not in EXPECTED_ALLOWED[state]:
        assert out == _expected_sequence_error(state, verb).to_bytes()
    else:
        assert codes(out)[0] == ALLOWED_REPLY[verb], out


@pytest.mark.parametrize("verb", sorted(NEEDS_AUTH))
def test_needs_auth_lifted_after_auth(verb: str) -> None:
    host = make_host(require_auth=True, auth_mechanisms=("PLAIN",))
    assert codes(host.feed(b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n")) == ["250", "235 2.7.0"]
    out = host.feed(COMMAND_LINE[verb] + b"\r\n")
    assert codes(out)[0] != "530 5.7.0"
    if verb in EXPECTED_ALLOWED[State.READY]:
        assert codes(out)[0] == ALLOWED_REPLY[verb]
    else:
        assert out == _expected_sequence_error(State.READY, verb).to_bytes()
