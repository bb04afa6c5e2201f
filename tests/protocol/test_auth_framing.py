"""AUTH sub-dialogue framing (RFC 4954 section 4): initial responses, 334
challenges, cancels, base64 errors, line limits. The memory host plays a
one-user PLAIN mechanism (u/p); the SASL mechanisms themselves are tested in
tests/sasl."""

from __future__ import annotations

import base64

import pytest

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.states import AUTH_LINE_LIMIT, Mode, State
from tests.protocol.host import MemoryHost, codes, make_host, of_type, transcript

GOOD = base64.b64encode(b"\0u\0p")  # b"AHUAcA=="


def auth_host(**params: object) -> MemoryHost:
    params.setdefault("auth_mechanisms", ("PLAIN",))
    host = make_host(**params)
    assert codes(host.feed(b"EHLO c\r\n")) == ["250"]
    return host


def test_initial_response_success() -> None:
    host = auth_host()
    assert host.feed(b"AUTH PLAIN " + GOOD + b"\r\n") == r.AUTH_SUCCEEDED.to_bytes()
    (start,) = of_type(host, ev.AuthStart)
    assert start == ev.AuthStart("PLAIN", b"\0u\0p", None)
    assert host.session.user == "u"
    assert host.session.mode is Mode.COMMAND
    assert codes(host.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["250 2.1.0"]


def test_mechanism_name_is_case_insensitive() -> None:
    host = auth_host()
    assert codes(host.feed(b"auth plain " + GOOD + b"\r\n")) == ["235 2.7.0"]
    assert of_type(host, ev.AuthStart)[0].mechanism == "PLAIN"


def test_wrong_credentials() -> None:
    host = auth_host()
    out = host.feed(b"AUTH PLAIN " + base64.b64encode(b"\0u\0wrong") + b"\r\n")
    assert codes(out) == ["535 5.7.8"]
    assert host.session.user is None
    assert host.session.errors == 0  # AUTH outcomes are not protocol errors


def test_equals_is_an_empty_initial_response() -> None:
    host = auth_host()
    assert codes(host.feed(b"AUTH PLAIN =\r\n")) == ["535 5.7.8"]
    (start,) = of_type(host, ev.AuthStart)
    assert start.initial == b"" and start.problem is None


def test_no_initial_response_is_none() -> None:
    host = auth_host()
    assert host.feed(b"AUTH PLAIN\r\n") == b"334 \r\n"
    (start,) = of_type(host, ev.AuthStart)
    assert start.initial is None and start.problem is None
    assert host.session.mode is Mode.AUTH_RESPONSE


def test_star_initial_response_cancels() -> None:
    host = auth_host()
    assert host.feed(b"AUTH PLAIN *\r\n") == r.AUTH_CANCELLED.to_bytes()
    (start,) = of_type(host, ev.AuthStart)
    assert start.problem is ev.AuthAbort.CANCELLED and start.initial is None
    assert codes(r.AUTH_CANCELLED.to_bytes()) == ["501 5.7.0"]


@pytest.mark.parametrize(
    "initial",
    [b"AHUAcA", b"AHUAcA=", b"AHUAc", b"=AHUAcA==", b"AHUAcA==AHUAcA==", b"AHU\tAcA==",
     b"AHUA*cA==", b"AHUAcA==\x0b", b"====", b"==", b"AHU_AcA==", b"\xc3\xa9"],
)
def test_bad_base64_initial_response(initial: bytes) -> None:
    host = auth_host()
    assert codes(host.feed(b"AUTH PLAIN " + initial + b"\r\n")) == ["501 5.5.2"]
    (start,) = of_type(host, ev.AuthStart)
    assert start.problem is ev.AuthAbort.BAD_BASE64 and start.initial is None
    assert host.session.mode is Mode.COMMAND


def test_initial_response_with_inner_space_is_a_syntax_error() -> None:
    host = auth_host()
    assert codes(host.feed(b"AUTH PLAIN AHUA cA==\r\n")) == ["501 5.5.2"]
    assert of_type(host, ev.AuthStart) == []


@pytest.mark.parametrize(
    ("line", "reply"),
    [(b"AUTH", "501 5.5.4"), (b"AUTH ", "501 5.5.4"), (b"AUTH LOGIN", "504 5.5.4"),
     (b"AUTH PL@IN", "501 5.5.2"), (b"AUTH " + b"A" * 21, "501 5.5.2")],
)
def test_auth_command_syntax(line: bytes, reply: str) -> None:
    host = auth_host()
    assert codes(host.feed(line + b"\r\n")) == [reply]
    assert host.session.mode is Mode.COMMAND


def test_challenge_then_response() -> None:
    host = auth_host()
    transcript(
        host,
        """
        C: AUTH PLAIN
        S: 334
        C: AHUAcA==
        S: 235 2.7.0
        """,
    )
    assert of_type(host, ev.AuthResponse) == [ev.AuthResponse(b"\0u\0p")]


def test_challenge_bytes_are_base64() -> None:
    host = auth_host()
    s = host.session
    s.receive_data(b"AUTH PLAIN\r\n")
    assert isinstance(s.next_event(), ev.AuthStart)
    s.auth_challenge(b"\x00\xffchallenge")
    assert s.data_to_send() == b"334 " + base64.b64encode(b"\x00\xffchallenge") + b"\r\n"
    s.receive_data(b"Zm9v\r\n")
    assert s.next_event() == ev.AuthResponse(b"foo")
    s.auth_challenge(b"")
    assert s.data_to_send() == b"334 \r\n"
    s.receive_data(b"\r\n")  # an empty line is an empty response
    assert s.next_event() == ev.AuthResponse(b"")


def test_cancel_in_the_response() -> None:
    host = auth_host()
    assert host.feed(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert codes(host.feed(b"*\r\n")) == ["501 5.7.0"]
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.CANCELLED)]
    assert host.session.mode is Mode.COMMAND
    assert host.session.user is None
    assert codes(host.feed(b"AUTH PLAIN " + GOOD + b"\r\n")) == ["235 2.7.0"]


@pytest.mark.parametrize(
    "response",
    [b" AHUAcA==", b"AHUAcA== ", b"AHUA cA==", b"AHUA\tcA==", b"AHUAcA", b"AHUAcA=",
     b"=AHUAcA==", b"AHUAcA===", b"AHUAcA==x", b"**", b"* ", b"\x00", b"EHLO c"],
)
def test_bad_base64_response(response: bytes) -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    assert host.feed(response + b"\r\n") == r.AUTH_BAD_BASE64.to_bytes()
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.BAD_BASE64)]
    assert host.session.mode is Mode.COMMAND
    assert codes(host.feed(b"NOOP\r\n")) == ["250 2.0.0"]


def test_response_line_limit_is_12288_with_crlf() -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    payload = b"A" * ((AUTH_LINE_LIMIT - 2) // 4 * 4)  # valid base64: a multiple of 4
    assert len(payload) + 2 <= AUTH_LINE_LIMIT
    assert codes(host.feed(payload + b"\r\n")) == ["535 5.7.8"]
    assert of_type(host, ev.AuthResponse)[0].data == base64.b64decode(payload)


def test_response_line_of_exactly_12288_is_read_as_a_response() -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    line = b"A" * (AUTH_LINE_LIMIT - 2) + b"\r\n"  # 12286 chars: valid length, bad base64
    assert len(line) == AUTH_LINE_LIMIT
    assert codes(host.feed(line)) == ["501 5.5.2"]
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.BAD_BASE64)]


@pytest.mark.parametrize("extra", [1, 2, 1000, 100_000])
def test_overlong_response_aborts_too_long(extra: int) -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    line = b"A" * (AUTH_LINE_LIMIT - 2 + extra) + b"\r\n"
    assert host.feed(line + b"NOOP\r\n") == r.AUTH_LINE_TOO_LONG.to_bytes() + r.OK.to_bytes()
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.TOO_LONG)]
    assert of_type(host, ev.AuthResponse) == []
    assert host.session.mode is Mode.COMMAND


def test_overlong_response_in_pieces_answers_at_the_lf() -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN\r\n")
    for _ in range(20):
        assert host.feed(b"A" * 5000) == b""
        assert host.session.buffered <= AUTH_LINE_LIMIT
    assert of_type(host, ev.AuthAborted) == []
    assert codes(host.feed(b"\r\n")) == ["500 5.5.6"]
    assert of_type(host, ev.AuthAborted) == [ev.AuthAborted(ev.AuthAbort.TOO_LONG)]


def test_auth_command_line_up_to_12288_accepted() -> None:
    host = auth_host()
    prefix = b"AUTH PLAIN "
    body = b"A" * ((AUTH_LINE_LIMIT - 2 - len(prefix)) // 4 * 4)
    line = prefix + body + b"\r\n"
    assert len(line) <= AUTH_LINE_LIMIT
    assert codes(host.feed(line)) == ["535 5.7.8"]
    assert of_type(host, ev.AuthStart)[0].initial == base64.b64decode(body)


def test_auth_command_line_exactly_12288() -> None:
    host = auth_host()
    line = b"AUTH PLAIN " + b"A" * (AUTH_LINE_LIMIT - len(b"AUTH PLAIN ") - 2) + b"\r\n"
    assert len(line) == AUTH_LINE_LIMIT
    out = host.feed(line)
    assert codes(out) == ["501 5.5.2"]  # not a length problem: 12275 chars is bad base64
    assert len(of_type(host, ev.AuthStart)) == 1


@pytest.mark.parametrize("extra", [1, 2, 50, 100_000])
def test_auth_command_line_longer_is_500_5_5_6(extra: int) -> None:
    host = auth_host()
    line = b"AUTH PLAIN " + b"A" * (AUTH_LINE_LIMIT - len(b"AUTH PLAIN ") - 2 + extra) + b"\r\n"
    assert host.feed(line + b"NOOP\r\n") == r.AUTH_LINE_TOO_LONG.to_bytes() + r.OK.to_bytes()
    assert of_type(host, ev.AuthStart) == []
    assert host.session.errors == 1


def test_auth_line_limit_applies_only_to_auth() -> None:
    host = auth_host()
    out = host.feed(b"NOOP " + b"A" * 2000 + b"\r\n")
    assert codes(out) == ["500 5.5.2"]


def test_lowercase_auth_gets_the_auth_limit() -> None:
    host = auth_host()
    assert codes(host.feed(b"auth plain " + b"A" * 2000 + b"\r\n")) == ["535 5.7.8"]


def test_auth_before_ehlo_is_503() -> None:
    host = make_host(auth_mechanisms=("PLAIN",))
    assert host.feed(b"AUTH PLAIN " + GOOD + b"\r\n") == r.NEED_EHLO.to_bytes()
    assert host.session.state is State.CONNECTED


def test_pipelined_commands_after_auth_wait_for_its_outcome() -> None:
    host = auth_host()
    out = host.feed(b"AUTH PLAIN " + GOOD + b"\r\nMAIL FROM:<a@b.example>\r\n")
    assert codes(out) == ["235 2.7.0", "250 2.1.0"]


def test_421_from_auth_closes() -> None:
    host = auth_host()
    s = host.session
    s.receive_data(b"AUTH PLAIN =\r\nNOOP\r\n")
    assert isinstance(s.next_event(), ev.AuthStart)
    s.auth_finish(r.TOO_MANY_AUTH_FAILURES, None)
    assert s.next_event() == ev.Closed()
    assert s.next_event() is None
    assert codes(s.data_to_send()) == ["421 4.7.0"]
    assert s.closed and s.buffered == 0


def test_successful_auth_sets_user_only_on_success() -> None:
    host = auth_host()
    host.feed(b"AUTH PLAIN =\r\n")
    assert host.session.user is None
    host.feed(b"AUTH PLAIN " + GOOD + b"\r\n")
    assert host.session.user == "u"
