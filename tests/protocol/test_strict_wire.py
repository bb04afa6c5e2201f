"""Strict wire syntax: canonical base64 in AUTH, 501 for bad values of known
parameters, ASCII-only numbers and keywords, every protocol error counted, and
no input that can raise out of a session.

RFC 4954 section 4 and RFC 4648 sections 3.5 and 4 (base64); RFC 5321
sections 4.1.1.11 and 4.2.4 (501 and 555); RFC 3030 section 3 (BDAT).
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.states import KNOWN_COMMANDS, Mode, State
from tests.protocol.host import SETUPS, MemoryHost, codes, make_host, of_type, open_host

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
# Not ASCII digits, though str.isdigit() says they are digits and some int() reads.
UNICODE_DIGITS = ["\u00b2", "\u2460", "\uff11\uff12", "\u0663", "\u0661\u0662", "\U0001d7d3",
                  "1\u00b2", "\u07c1"]


def auth_host(**params: object) -> MemoryHost:
    params.setdefault("auth_mechanisms", ("PLAIN",))
    host = make_host(**params)
    assert codes(host.feed(b"EHLO c\r\n")) == ["250"]
    return host


# --- base64 in AUTH ------------------------------------------------------------------

# Canonical base64 of "\0u\0p" is AHUAcA==; these decode to the same bytes with
# non-zero pad bits (RFC 4648 section 3.5), so a lenient decoder logs the user in.
NON_CANONICAL = [b"AHUAcB==", b"AHUAcP==", b"QR==", b"QUJ="]


@pytest.mark.parametrize("data", NON_CANONICAL)
def test_non_canonical_initial_response_is_501(data: bytes) -> None:
    host = auth_host()
    assert codes(host.feed(b"AUTH PLAIN " + data + b"\r\n")) == ["501 5.5.2"]
    assert host.session.user is None


@pytest.mark.parametrize("data", NON_CANONICAL)
def test_non_canonical_response_is_501(data: bytes) -> None:
    host = auth_host()
    assert host.feed(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert codes(host.feed(data + b"\r\n")) == ["501 5.5.2"]
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.BAD_BASE64)]
    assert host.session.user is None


def test_equals_answering_a_challenge_is_501_not_empty() -> None:
    """"=" is an empty *initial* response only; an empty line is the empty answer."""
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    assert codes(host.feed(b"=\r\n")) == ["501 5.5.2"]
    assert of_type(host, ev.AuthResponse) == []
    host.feed(b"AUTH PLAIN\r\n")
    assert codes(host.feed(b"\r\n")) == ["535 5.7.8"]
    assert of_type(host, ev.AuthResponse) == [ev.AuthResponse(b"")]


@pytest.mark.parametrize("size", range(0, 12))
def test_every_canonical_encoding_decodes(size: int) -> None:
    data = bytes(range(200, 200 + size))
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    host.feed(base64.b64encode(data) + b"\r\n")
    assert of_type(host, ev.AuthResponse) == [ev.AuthResponse(data)]


# --- parameters ------------------------------------------------------------------------

def mail(params: str, **kwargs: object) -> list[str]:
    host = open_host(**kwargs)
    host.feed(b"EHLO c\r\n")
    return codes(host.feed(f"MAIL FROM:<a@b.example> {params}\r\n".encode()))


@pytest.mark.parametrize(
    "params",
    ["SIZE=abc", "SIZE=", "SIZE", "BODY=BINARYMIME", "BODY", "AUTH=a+zz", "AUTH=a+0D",
     "SMTPUTF8=yes", "SIZE=1 SIZE=1", "BODY=7BIT body=8BITMIME", "BODY=8BITM\u0131ME"],
)
def test_known_parameter_with_bad_value_is_501(params: str) -> None:
    assert mail(params) == ["501 5.5.4"]


@pytest.mark.parametrize("params", ["FOO=1", "NOTIFY=NEVER", "ORCPT=rfc822;a@b", "X-Y"])
def test_unknown_parameter_is_555(params: str) -> None:
    assert mail(params) == ["555 5.5.4"]


# --- numbers and keywords are ASCII -----------------------------------------------------

@pytest.mark.parametrize("digits", UNICODE_DIGITS)
def test_bdat_size_in_unicode_digits_is_501(digits: str) -> None:
    host = open_host()
    assert codes(host.feed(ENVELOPE)) == ["250", "250 2.1.0", "250 2.1.5"]
    assert codes(host.feed(f"BDAT {digits}\r\nNOOP\r\n".encode())) == ["501 5.5.4", "250 2.0.0"]
    assert host.session.state is State.RCPT and host.session.mode is Mode.COMMAND


@pytest.mark.parametrize("digits", UNICODE_DIGITS)
def test_bdat_out_of_sequence_with_unicode_digits_is_503(digits: str) -> None:
    """Refused before its size is read (no login, no EHLO): never an exception."""
    host = make_host()
    assert codes(host.feed(f"BDAT {digits}\r\nNOOP\r\n".encode())) == ["503 5.5.1", "250 2.0.0"]


@pytest.mark.parametrize("digits", UNICODE_DIGITS)
def test_size_in_unicode_digits_is_501(digits: str) -> None:
    assert mail(f"SIZE={digits}") == ["501 5.5.4"]


@pytest.mark.parametrize("last", ["LA\u017fT", "la\u017ft"])  # LATIN SMALL LETTER LONG S
def test_last_marker_is_ascii(last: str) -> None:
    host = open_host()
    host.feed(ENVELOPE)
    assert codes(host.feed(f"BDAT 1 {last}\r\n".encode())) == ["501 5.5.4"]


def test_mechanism_name_is_ascii() -> None:
    """"\u017fcram" upper-cases to "SCRAM"; a mechanism name is ASCII (RFC 4422 3.1)."""
    host = auth_host()
    assert codes(host.feed("AUTH PLAIN\u017f\r\n".encode())) == ["501 5.5.2"]
    assert of_type(host, ev.AuthStart) == []


argument = st.lists(
    st.one_of(st.text(st.characters(blacklist_characters="\r\n"), max_size=12),
              st.sampled_from([*UNICODE_DIGITS, "5", "0", "LAST", "FROM:<a@b.example>",
                               "TO:<c@d.example>", "SIZE=\u00b2", "BODY=8BITMIME", "=", "*"])),
    max_size=4,
).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(verb=st.sampled_from(sorted(KNOWN_COMMANDS)), arg=argument,
       state=st.sampled_from(list(SETUPS)), require_auth=st.booleans())
def test_random_unicode_arguments_get_one_reply(
    verb: str, arg: str, state: State, require_auth: bool
) -> None:
    """Each command with any Unicode argument, in any state: exactly one reply, no
    exception. A BDAT that was accepted owes its reply until its chunk is complete,
    and only an ASCII number can have been taken for its size."""
    host = make_host(require_auth=require_auth, starttls_offered=True, auth_mechanisms=("PLAIN",))
    if require_auth and state is not State.CONNECTED:
        assert codes(host.feed(b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n")) == ["250", "235 2.7.0"]
    host.feed(SETUPS[state])
    assert host.session.state is state
    # a lone surrogate makes bytes that are not UTF-8: such a line gets 500 5.5.1
    out = host.feed(f"{verb} {arg}\r\n".encode("utf-8", "surrogatepass"))
    if not codes(out):
        assert verb == "BDAT" and host.session.mode is Mode.BDAT, out
        size = arg.split(maxsplit=1)[0]
        assert size.isascii() and size.isdigit(), size
    else:
        assert len(codes(out)) == 1, out


# --- max_errors counts every protocol error, whoever chose it ----------------------------

@pytest.mark.parametrize(
    ("line", "reply"),
    [(b"AUTH XOAUTH2", "504 5.5.4"),  # the host's answer, passed in through auth_finish
     (b"AUTH PLAIN *", "501 5.7.0"),
     (b"AUTH PLAIN AHUAcB==", "501 5.5.2")],
)
def test_errors_from_the_host_count_towards_max_errors(line: bytes, reply: str) -> None:
    host = auth_host(max_errors=3)
    assert codes(host.feed(line + b"\r\n" + line + b"\r\n")) == [reply, reply]
    assert host.session.errors == 2 and not host.session.closed
    assert codes(host.feed(line + b"\r\nNOOP\r\n")) == ["421 4.7.0"]
    assert host.session.closed
    assert isinstance(host.events[-1], ev.Closed)


def test_host_rejection_with_a_protocol_error_counts() -> None:
    host = open_host(max_errors=2)
    host.reject_rcpt = {"x@d.example"}
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    host.session.receive_data(b"RCPT TO:<x@d.example>\r\nFOO\r\n")
    event = host.session.next_event()
    assert isinstance(event, ev.RcptTo)
    host.session.reject(r.BAD_SYNTAX)
    host.pump()
    assert codes(host.session.data_to_send()) == ["501 5.5.2", "421 4.7.0"]


# --- DATA after BDAT -----------------------------------------------------------------------

def test_data_after_bdat_says_why() -> None:
    """RFC 3030 section 3: DATA and BDAT never mix in one transaction."""
    host = open_host()
    host.feed(ENVELOPE)
    assert codes(host.feed(b"BDAT 2\r\nab")) == ["250 2.0.0"]
    out = host.feed(b"DATA\r\n")
    assert codes(out) == ["503 5.5.1"]
    assert b"BDAT" in out and b"RCPT first" not in out
    assert codes(host.feed(b"RCPT TO:<e@d.example>\r\n")) == ["503 5.5.1"]
    assert codes(host.feed(b"BDAT 1 LAST\r\nc")) == ["250 2.0.0"]
    assert host.messages == [b"abc"]
