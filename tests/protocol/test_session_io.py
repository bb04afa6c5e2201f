"""Transcripts: line limits, STARTTLS, PIPELINING, timeouts."""

from __future__ import annotations

import pytest

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.states import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT, Mode, State
from tests.protocol.host import SETUPS, codes, make_host, of_type, open_host

# --- line limits ------------------------------------------------------------------


def test_command_line_limit_is_512_with_crlf() -> None:
    host = open_host()
    ok = b"NOOP " + b"x" * (COMMAND_LINE_LIMIT - 7)
    assert len(ok + b"\r\n") == COMMAND_LINE_LIMIT
    assert codes(host.feed(ok + b"\r\n")) == ["250 2.0.0"]
    assert codes(host.feed(ok + b"x\r\n")) == ["500 5.5.2"]
    assert codes(host.feed(b"NOOP\r\n")) == ["250 2.0.0"]  # the session survives


@pytest.mark.parametrize("size", [513, 1000, AUTH_LINE_LIMIT, AUTH_LINE_LIMIT + 1, 50_000])
def test_overlong_command_then_next_command(size: int) -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    line = b"MAIL FROM:<" + b"a" * size + b"@b.example>\r\n"
    assert host.feed(line + b"NOOP\r\n") == r.LINE_TOO_LONG.to_bytes() + r.OK.to_bytes()
    assert host.session.state is State.READY
    assert host.session.errors == 1


def test_overlong_line_in_pieces() -> None:
    host = open_host()
    for _ in range(10):
        assert host.feed(b"X" * 3000) == b""
        assert host.session.buffered <= AUTH_LINE_LIMIT
    assert host.feed(b"\r\nNOOP\r\n") == r.LINE_TOO_LONG.to_bytes() + r.OK.to_bytes()


def test_unterminated_10mb_line_keeps_the_buffer_bounded() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    piece = b"A" * 65536
    for _ in range(10 * 1024 * 1024 // len(piece)):
        assert host.feed(piece) == b""
        assert host.session.buffered <= AUTH_LINE_LIMIT
        assert host.session.mode is Mode.DISCARD_LINE
    assert host.feed(b"B" * (10 * 1024 * 1024)) == b""
    assert host.session.buffered <= AUTH_LINE_LIMIT
    out = host.feed(b"\r\nNOOP\r\n")
    assert out == r.LINE_TOO_LONG.to_bytes() + r.OK.to_bytes()
    assert host.session.mode is Mode.COMMAND
    assert host.session.buffered == 0


def test_bare_lf_command_lines_accepted() -> None:
    host = open_host()
    assert codes(host.feed(b"EHLO c\nNOOP\n")) == ["250", "250 2.0.0"]


# --- STARTTLS ---------------------------------------------------------------------


def test_starttls() -> None:
    host = make_host(starttls_offered=True)
    host.feed(b"EHLO c\r\n")
    out = host.feed(b"STARTTLS\r\n")
    assert out == r.READY_FOR_TLS.to_bytes()
    assert codes(out) == ["220 2.0.0"]
    assert host.starttls
    assert isinstance(host.events[-1], ev.StartTls)
    assert host.session.closed


def test_starttls_before_ehlo_is_accepted() -> None:
    host = make_host(starttls_offered=True, require_auth=True)
    assert codes(host.feed(b"STARTTLS\r\n")) == ["220 2.0.0"]
    assert host.starttls


def test_starttls_pipelined_command_is_never_answered() -> None:
    host = make_host(starttls_offered=True)
    host.feed(b"EHLO c\r\n")
    out = host.feed(b"STARTTLS\r\nNOOP\r\n")
    assert out == r.READY_FOR_TLS.to_bytes()
    assert host.session.buffered == 0
    assert host.feed(b"NOOP\r\n") == b""
    assert [type(e) for e in host.events] == [ev.StartTls]


def test_starttls_plaintext_injection_in_same_packet_dies() -> None:
    host = make_host(starttls_offered=True, require_auth=False)
    out = host.feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
    assert codes(out) == ["250", "220 2.0.0"]
    assert of_type(host, ev.MailFrom) == []


@pytest.mark.parametrize(
    ("params", "line", "reply"),
    [
        ({"starttls_offered": True}, b"STARTTLS now", "501 5.5.4"),
        ({"starttls_offered": True, "tls_active": True}, b"STARTTLS", "503 5.5.1"),
        ({"starttls_offered": False, "tls_active": True}, b"STARTTLS", "503 5.5.1"),
        ({"starttls_offered": False}, b"STARTTLS", "502 5.5.1"),
    ],
)
def test_starttls_errors(params: dict[str, object], line: bytes, reply: str) -> None:
    host = make_host(**params)
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(line + b"\r\n")) == [reply]
    assert not host.session.closed
    assert not host.starttls
    assert codes(host.feed(b"NOOP\r\n")) == ["250 2.0.0"]


# --- PIPELINING, timeout ------------------------------------------------------------


def test_pipelining_replies_in_order_in_one_write() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    out = host.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nDATA\r\n"
    )
    assert out == (
        r.SENDER_OK.to_bytes() + r.RECIPIENT_OK.to_bytes() + r.RECIPIENT_OK.to_bytes()
        + r.START_MAIL_INPUT.to_bytes()
    )
    assert [type(e) for e in host.events] == [ev.MailFrom, ev.RcptTo, ev.RcptTo, ev.DataStart]


def test_pipelining_waits_for_the_host() -> None:
    """While an event awaits its reply, nothing further is read or answered."""
    host = open_host()
    s = host.session
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\nRCPT TO:<c@d.example>\r\n")
    first = s.next_event()
    assert isinstance(first, ev.MailFrom)
    assert s.next_event() is None and s.awaiting_reply
    assert codes(s.data_to_send()) == ["250"]
    s.accept()
    second = s.next_event()
    assert isinstance(second, ev.RcptTo)
    s.reject(r.MAILBOX_NOT_ALLOWED)
    assert s.next_event() is None and not s.awaiting_reply
    assert codes(s.data_to_send()) == ["250 2.1.0", "250 2.0.0", "553 5.1.3"]


def test_answer_without_pending_event_is_a_host_bug() -> None:
    host = open_host()
    with pytest.raises(RuntimeError):
        host.session.accept()
    with pytest.raises(RuntimeError):
        host.session.reply(r.OK)
    with pytest.raises(RuntimeError):
        host.session.auth_finish(r.AUTH_SUCCEEDED, "u")


IN_DATA = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nab"


@pytest.mark.parametrize("setup", [*SETUPS.values(), IN_DATA])
def test_timeout_is_421_4_4_2_and_closes(setup: bytes) -> None:
    host = open_host()
    host.feed(setup)
    host.session.timeout()
    host.pump()
    assert host.session.data_to_send() == r.TIMEOUT.to_bytes()
    assert host.session.closed
    assert isinstance(host.events[-1], ev.Closed)
    host.session.timeout()  # idempotent
    assert host.session.data_to_send() == b""
    assert host.feed(b"NOOP\r\n") == b""


def test_shutdown_is_421_4_3_2() -> None:
    host = open_host()
    host.session.shutdown()
    host.pump()
    assert codes(host.session.data_to_send()) == ["421 4.3.2"]
    assert host.session.closed
