"""The command/state table, checked against expectations written out as data.

``EXPECTED`` below is transcribed by hand from RFC 5321 sections 3.3 and
4.1.4 (order of commands), RFC 3030 sections 2 and 3 (BDAT: no DATA and no
RCPT once chunks started) and RFC 4954 sections 4 and 6 (AUTH: not inside a
transaction; 530 until authenticated), independently of ``states.py``. Each
cell is the reply a command gets in a state, or RUNS when the command runs.
The table function and a live session are both checked against it.
"""

from __future__ import annotations

import pytest

from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.states import KNOWN_COMMANDS, NEEDS_AUTH, SEQUENCE, State, refusal
from tests.protocol.host import MemoryHost, codes, make_host

RUNS = None
LIVE_STATES = (State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.BDAT)
NEED_EHLO, NEED_MAIL, NEED_RCPT = r.NEED_EHLO, r.NEED_MAIL, r.NEED_RCPT
NESTED, IN_TXN = r.NESTED_MAIL, r.AUTH_IN_TRANSACTION
DATA_BDAT, RCPT_BDAT = r.DATA_AFTER_BDAT, r.RCPT_AFTER_BDAT

# require_auth off. Columns: CONNECTED, READY, MAIL, RCPT, BDAT.
EXPECTED: dict[str, tuple[Reply | None, ...]] = {
    "HELO": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "EHLO": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "MAIL": (NEED_EHLO, RUNS, NESTED, NESTED, NESTED),
    "RCPT": (NEED_EHLO, NEED_MAIL, RUNS, RUNS, RCPT_BDAT),
    "DATA": (NEED_EHLO, NEED_MAIL, NEED_RCPT, RUNS, DATA_BDAT),
    "BDAT": (NEED_EHLO, NEED_MAIL, NEED_RCPT, RUNS, RUNS),
    "AUTH": (NEED_EHLO, RUNS, IN_TXN, IN_TXN, IN_TXN),
    "RSET": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "NOOP": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "QUIT": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "VRFY": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "EXPN": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "HELP": (RUNS, RUNS, RUNS, RUNS, RUNS),
    "STARTTLS": (RUNS, RUNS, RUNS, RUNS, RUNS),
}
# require_auth on, before AUTH succeeded (MAIL, RCPT and BDAT are unreachable so).
# Columns: CONNECTED, READY. Where the sequence refuses a command before EHLO, its
# 503 comes first; otherwise 530.
NO_AUTH = r.AUTH_REQUIRED
EXPECTED_UNAUTHENTICATED: dict[str, tuple[Reply | None, ...]] = {
    "HELO": (RUNS, RUNS),
    "EHLO": (RUNS, RUNS),
    "MAIL": (NEED_EHLO, NO_AUTH),
    "RCPT": (NEED_EHLO, NO_AUTH),
    "DATA": (NEED_EHLO, NO_AUTH),
    "BDAT": (NEED_EHLO, NO_AUTH),
    "AUTH": (NEED_EHLO, RUNS),
    "RSET": (RUNS, RUNS),
    "NOOP": (RUNS, RUNS),
    "QUIT": (RUNS, RUNS),
    "VRFY": (NO_AUTH, NO_AUTH),
    "EXPN": (NO_AUTH, NO_AUTH),
    "HELP": (NO_AUTH, NO_AUTH),
    "STARTTLS": (RUNS, RUNS),
}


def expected(state: State, verb: str, *, authenticated: bool = True) -> Reply | None:
    if authenticated:
        return EXPECTED[verb][LIVE_STATES.index(state)]
    return EXPECTED_UNAUTHENTICATED[verb][LIVE_STATES.index(state)]


PAIRS = [(state, verb) for state in LIVE_STATES for verb in sorted(EXPECTED)]
IDS = [f"{s.name}-{v}" for s, v in PAIRS]
UNAUTH_PAIRS = [(s, v) for s in LIVE_STATES[:2] for v in sorted(EXPECTED)]
UNAUTH_IDS = [f"{s.name}-{v}" for s, v in UNAUTH_PAIRS]


def test_known_commands_are_the_expected_ones() -> None:
    assert set(EXPECTED) == set(EXPECTED_UNAUTHENTICATED) == KNOWN_COMMANDS


def test_table_has_every_live_state() -> None:
    assert set(SEQUENCE) == set(LIVE_STATES) == set(State) - {State.CLOSED}


def test_needs_auth_is_every_command_but_the_exempt_ones() -> None:
    # RFC 4954 section 6 and README: all but AUTH, EHLO, HELO, NOOP, RSET, QUIT, STARTTLS.
    assert {"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "HELP"} == NEEDS_AUTH


@pytest.mark.parametrize(("state", "verb"), PAIRS, ids=IDS)
def test_table(state: State, verb: str) -> None:
    got = refusal(state, verb, esmtp=True, authenticated=False, auth_required=False)
    assert got == expected(state, verb)


@pytest.mark.parametrize(("state", "verb"), UNAUTH_PAIRS, ids=UNAUTH_IDS)
def test_table_before_auth(state: State, verb: str) -> None:
    got = refusal(state, verb, esmtp=True, authenticated=False, auth_required=True)
    assert got == expected(state, verb, authenticated=False)


@pytest.mark.parametrize(
    ("esmtp", "authenticated", "reply"),
    [(True, False, RUNS), (False, False, r.AUTH_NEEDS_EHLO), (True, True, r.AUTH_ALREADY_DONE),
     (False, True, r.AUTH_NEEDS_EHLO)],
)
def test_auth_preconditions(esmtp: bool, authenticated: bool, reply: Reply | None) -> None:
    """RFC 4954 section 4: AUTH needs EHLO (it is an extension) and runs once."""
    assert refusal(State.READY, "AUTH", esmtp=esmtp, authenticated=authenticated,
                   auth_required=True) == reply


# --- the same table, through a live session -----------------------------------------

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
# The first reply each command gets when it runs.
RUN_REPLY = {
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
SETUP = {
    State.CONNECTED: b"",
    State.READY: b"EHLO c\r\n",
    State.MAIL: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n",
    State.RCPT: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n",
    State.BDAT: b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 1\r\nx",
}


def host_in(state: State, **params: object) -> MemoryHost:
    """A session driven into ``state`` with ordinary commands."""
    params.setdefault("require_auth", False)
    params.setdefault("starttls_offered", True)
    params.setdefault("auth_mechanisms", ("PLAIN",))
    host = make_host(**params)
    out = host.feed(SETUP[state])
    assert all(c.startswith("250") for c in codes(out)), out
    assert host.session.state is state
    return host


def check_session(host: MemoryHost, state: State, verb: str, want: Reply | None) -> None:
    out = host.feed(COMMAND_LINE[verb] + b"\r\n")
    if want is None:  # RUNS
        assert codes(out)[0] == RUN_REPLY[verb], out
    else:
        assert out == want.to_bytes()
        assert host.session.state is state  # a refused command changes nothing


@pytest.mark.parametrize(("state", "verb"), PAIRS, ids=IDS)
def test_session_follows_table(state: State, verb: str) -> None:
    host = host_in(state)
    check_session(host, state, verb, expected(state, verb))
    if expected(state, verb) is not RUNS:
        assert host.session.errors == 1


@pytest.mark.parametrize(("state", "verb"), UNAUTH_PAIRS, ids=UNAUTH_IDS)
def test_session_before_auth(state: State, verb: str) -> None:
    host = host_in(state, require_auth=True)
    check_session(host, state, verb, expected(state, verb, authenticated=False))


@pytest.mark.parametrize("verb", sorted(NEEDS_AUTH))
def test_needs_auth_lifted_after_auth(verb: str) -> None:
    host = make_host(require_auth=True, auth_mechanisms=("PLAIN",))
    assert codes(host.feed(b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n")) == ["250", "235 2.7.0"]
    check_session(host, State.READY, verb, expected(State.READY, verb))


@pytest.mark.parametrize(
    ("setup", "reply"),
    [(b"HELO c\r\n", r.AUTH_NEEDS_EHLO),
     (b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n", r.AUTH_ALREADY_DONE),
     (b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\nHELO c\r\n", r.AUTH_NEEDS_EHLO)],
)
def test_session_auth_preconditions(setup: bytes, reply: Reply) -> None:
    host = make_host(require_auth=True, auth_mechanisms=("PLAIN",))
    host.feed(setup)
    assert host.feed(b"AUTH PLAIN AHUAcA==\r\n") == reply.to_bytes()
