"""Transcripts for every command and error path outside DATA/BDAT and AUTH."""

from __future__ import annotations

import pytest

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session
from smtpgate.protocol.states import State
from smtpgate.protocol.transaction import Transaction
from tests.protocol.host import (
    SETUPS,
    codes,
    make_host,
    mode_or_state,
    of_type,
    open_host,
    session_params,
    transcript,
)

BASE_KEYWORDS = [
    "PIPELINING",
    "SIZE 26214400",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
]


def ehlo_lines(out: bytes) -> list[str]:
    lines = out.decode().split("\r\n")
    assert lines[-1] == ""
    for line in lines[:-2]:
        assert line.startswith("250-")
    assert lines[-2].startswith("250 ")
    return [line[4:] for line in lines[:-1]]


# --- greeting, HELO, EHLO ------------------------------------------------------


def test_greeting_is_220_without_enhanced_code() -> None:
    s = Session(session_params())
    s.greet()
    assert s.data_to_send() == b"220 mx.test ESMTP smtpgate\r\n"


def test_ehlo_keywords_default() -> None:
    host = open_host()
    assert ehlo_lines(host.feed(b"EHLO client.test\r\n")) == ["mx.test", *BASE_KEYWORDS]
    assert host.session.state is State.READY
    assert host.session.esmtp is True
    assert host.session.helo == "client.test"


@pytest.mark.parametrize(
    ("offered", "active", "has_starttls"),
    [(True, False, True), (False, False, False), (True, True, False), (False, True, False)],
)
def test_ehlo_starttls_keyword(offered: bool, active: bool, has_starttls: bool) -> None:
    host = open_host(starttls_offered=offered, tls_active=active)
    words = ehlo_lines(host.feed(b"EHLO c\r\n"))
    assert ("STARTTLS" in words) == has_starttls
    expected = ["mx.test", *BASE_KEYWORDS] + (["STARTTLS"] if has_starttls else [])
    assert words == expected


@pytest.mark.parametrize(
    "mechanisms",
    [(), ("PLAIN",), ("SCRAM-SHA-256", "PLAIN", "LOGIN"), ("LOGIN", "CRAM-MD5", "PLAIN")],
)
def test_ehlo_auth_line_lists_mechanisms_in_order(mechanisms: tuple[str, ...]) -> None:
    host = open_host(auth_mechanisms=mechanisms, starttls_offered=True)
    words = ehlo_lines(host.feed(b"EHLO c\r\n"))
    auth_lines = [w for w in words if w.startswith("AUTH")]
    if mechanisms:
        assert auth_lines == ["AUTH " + " ".join(mechanisms)]
        assert words[-1] == auth_lines[0]  # last, after STARTTLS
        assert words[-2] == "STARTTLS"
    else:
        assert auth_lines == []
        assert words[-1] == "STARTTLS"


def test_ehlo_size_is_the_limit() -> None:
    host = open_host(max_message_size=12345)
    assert "SIZE 12345" in ehlo_lines(host.feed(b"EHLO c\r\n"))


def test_ehlo_after_auth_still_lists_mechanisms() -> None:
    host = make_host(auth_mechanisms=("PLAIN", "LOGIN"))
    host.feed(b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\n")
    assert host.session.user == "u"
    assert ehlo_lines(host.feed(b"EHLO c\r\n"))[-1] == "AUTH PLAIN LOGIN"
    assert codes(host.feed(b"AUTH PLAIN AHUAcA==\r\n")) == ["503 5.5.1"]


def test_helo_reply_is_plain_250() -> None:
    host = open_host()
    assert host.feed(b"HELO client.test\r\n") == b"250 mx.test\r\n"
    assert host.session.esmtp is False
    assert host.session.state is State.READY


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO", b"helo", b"eHlO"])
def test_helo_ehlo_need_an_argument(verb: bytes) -> None:
    host = open_host()
    assert codes(host.feed(verb + b"\r\n")) == ["501 5.5.4"]
    assert host.session.state is State.CONNECTED


def test_ehlo_name_is_sanitised() -> None:
    host = open_host()
    host.feed(b"EHLO bad\x01\x7fname\r\n")
    assert host.session.helo == "badname"


def test_ehlo_resets_a_transaction() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert host.session.state is State.RCPT
    host.feed(b"EHLO c\r\n")
    assert mode_or_state(host, "state") is State.READY
    assert host.session.transaction == Transaction()
    assert codes(host.feed(b"RCPT TO:<c@d.example>\r\n")) == ["503 5.5.1"]


# --- MAIL and RCPT ---------------------------------------------------------------


def mail(arg: str, **params: object) -> list[str]:
    host = open_host(**params)
    host.feed(b"EHLO c\r\n")
    return codes(host.feed(f"MAIL {arg}\r\n".encode()))


def rcpt(arg: str, mail_arg: str = "FROM:<a@b.example>", **params: object) -> list[str]:
    host = open_host(**params)
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(f"MAIL {mail_arg}\r\n".encode())) == ["250 2.1.0"]
    return codes(host.feed(f"RCPT {arg}\r\n".encode()))


def mail_event(arg: str) -> ev.MailFrom:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(f"MAIL {arg}\r\n".encode())) == ["250 2.1.0"]
    (event,) = of_type(host, ev.MailFrom)
    return event


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("FROM:<a@b.example>", "a@b.example"),
        ("from:<a@b.example>", "a@b.example"),
        ("FROM: <a@b.example>", "a@b.example"),
        ("FROM:<>", ""),
        ('FROM:<"john doe"@b.example>', '"john doe"@b.example'),
        ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        ("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
        ("FROM:<@relay.example:a@b.example>", "a@b.example"),
        ("FROM:<@r1.example,@r2.example:a@b.example>", "a@b.example"),
        ("FROM:<a.b+tag@sub.b.example>", "a.b+tag@sub.b.example"),
    ],
)
def test_mail_paths_accepted(arg: str, address: str) -> None:
    assert mail_event(arg).address == address


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "FROM:",
        "FROM:a@b.example",
        "FROM:<a@b.example",
        "TO:<a@b.example>",
        "FROM:<a b@c.example>",
        "FROM:<a@>",
        "FROM:<@b.example>",
        "FROM:<a@b..example>",
        "FROM:<a..b@c.example>",
        "FROM:<.a@c.example>",
        "FROM:<a@-b.example>",
        "FROM:<" + "a" * 250 + "@b.example>",
        "FROM:<@relay.example:>",
    ],
)
def test_mail_bad_path_is_501_5_1_7(arg: str) -> None:
    assert mail(arg) == ["501 5.1.7"]


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "TO:",
        "TO:<>",
        "TO:c@d.example",
        "FROM:<c@d.example>",
        "TO:<c@d.example",
        "TO:<c@@d.example>",
        "TO:<nobody>",
        "TO:<c@d.example.>",
    ],
)
def test_rcpt_bad_path_is_501_5_1_3(arg: str) -> None:
    assert rcpt(arg) == ["501 5.1.3"]


@pytest.mark.parametrize("arg", ["TO:<postmaster>", "TO:<Postmaster>", "TO:<POSTMASTER>"])
def test_rcpt_postmaster(arg: str) -> None:
    assert rcpt(arg) == ["250 2.1.5"]


def test_rcpt_source_route_stripped() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert codes(host.feed(b"RCPT TO:<@hop.example:c@d.example>\r\n")) == ["250 2.1.5"]
    assert [e.address for e in of_type(host, ev.RcptTo)] == ["c@d.example"]
    assert host.session.transaction.recipients == ["c@d.example"]


def test_rcpt_parameters_unknown() -> None:
    assert rcpt("TO:<c@d.example> FOO=1") == ["555 5.5.4"]
    assert rcpt("TO:<c@d.example> RET=FULL") == ["555 5.5.4"]  # a MAIL parameter


def test_host_rejections_pass_through() -> None:
    host = open_host()
    host.reject_mail = Reply(553, "5.1.7", "Sender address not allowed")
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["553 5.1.7"]
    assert host.session.state is State.READY
    host.reject_mail = None
    host.reject_rcpt = {"bad@d.example"}
    out = host.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bad@d.example>\r\nDATA\r\n")
    assert codes(out) == ["250 2.1.0", "550 5.1.1", "503 5.5.1"]
    assert mode_or_state(host, "state") is State.MAIL


# RFC 5321 section 4.1.1.11: 555 for a parameter not recognised, 501 for a
# recognised one with a bad value or given twice.
@pytest.mark.parametrize(
    ("params", "reply"),
    [
        ("FOO=1", "555 5.5.4"),
        ("FOO", "555 5.5.4"),
        ("NOTIFY=NEVER", "555 5.5.4"),
        ("X-EVIL=\x01", "555 5.5.4"),
        ("SIZE=10 SIZE=10", "501 5.5.4"),
        ("SIZE=10 size=11", "501 5.5.4"),
        ("SIZE=", "501 5.5.4"),
        ("SIZE=abc", "501 5.5.4"),
        ("SIZE", "501 5.5.4"),
        ("SIZE=-1", "501 5.5.4"),
        ("SIZE=+1", "501 5.5.4"),
        ("SIZE=1e3", "501 5.5.4"),
        ("SIZE=100", "250 2.1.0"),
        ("size=26214400", "250 2.1.0"),
        ("SIZE=26214401", "552 5.3.4"),
        ("SIZE=999999999999999999", "552 5.3.4"),
        ("BODY=7BIT", "250 2.1.0"),
        ("BODY=8BITMIME", "250 2.1.0"),
        ("body=8bitmime", "250 2.1.0"),
        ("BODY=BINARYMIME", "501 5.5.4"),
        ("BODY", "501 5.5.4"),
        ("BODY=", "501 5.5.4"),
        ("BODY=7BIT BODY=7BIT", "501 5.5.4"),
        ("SMTPUTF8", "250 2.1.0"),
        ("SMTPUTF8=yes", "501 5.5.4"),
        ("SMTPUTF8 SMTPUTF8", "501 5.5.4"),
        ("AUTH=<>", "250 2.1.0"),
        ("AUTH=joe", "250 2.1.0"),
        ("AUTH", "501 5.5.4"),
        ("AUTH=+2", "501 5.5.4"),
        ("AUTH=a+", "501 5.5.4"),
        ("AUTH=a+zz", "501 5.5.4"),
        ("AUTH=a+2b", "501 5.5.4"),  # xtext hex digits are upper case (RFC 3461)
        ("AUTH=a+0A", "501 5.5.4"),  # no control characters once decoded
        ("AUTH=a+00", "501 5.5.4"),
        ("AUTH=a=b", "501 5.5.4"),
        ("AUTH=<> AUTH=<>", "501 5.5.4"),
        ("SIZE=10 BODY=8BITMIME SMTPUTF8 AUTH=<>", "250 2.1.0"),
    ],
)
def test_mail_parameters(params: str, reply: str) -> None:
    assert mail(f"FROM:<a@b.example> {params}") == [reply]


def test_size_over_limit_leaves_no_transaction() -> None:
    host = open_host(max_message_size=1000)
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(b"MAIL FROM:<a@b.example> SIZE=1001\r\n")) == ["552 5.3.4"]
    assert host.session.state is State.READY
    assert of_type(host, ev.MailFrom) == []
    assert codes(host.feed(b"MAIL FROM:<a@b.example> SIZE=1000\r\n")) == ["250 2.1.0"]


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("<>", ""),
        ("joe", "joe"),
        ("joe+2Bfoo@example.org", "joe+foo@example.org"),
        ("+2B+3D+20x", "+= x"),
        ("a+2B", "a+"),
    ],
)
def test_mail_auth_param_is_xtext_decoded(value: str, decoded: str) -> None:
    event = mail_event(f"FROM:<a@b.example> AUTH={value}")
    assert event.params == {"AUTH": decoded}


def test_mail_params_are_passed_upper_case_keys() -> None:
    event = mail_event("FROM:<a@b.example> size=5 body=8BITMIME smtputf8")
    assert event.params == {"SIZE": "5", "BODY": "8BITMIME", "SMTPUTF8": None}


def test_mail_params_after_helo_are_refused() -> None:
    host = open_host()
    host.feed(b"HELO c\r\n")
    assert codes(host.feed(b"MAIL FROM:<a@b.example> SIZE=10\r\n")) == ["555 5.5.4"]
    assert codes(host.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["250 2.1.0"]


def test_non_ascii_addresses_need_smtputf8() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    sender = "jos\u00e9@b\u00fccher.example"
    assert codes(host.feed(f"MAIL FROM:<{sender}>\r\n".encode())) == ["553 5.6.7"]
    assert codes(host.feed(f"MAIL FROM:<{sender}> SMTPUTF8\r\n".encode())) == ["250 2.1.0"]
    assert of_type(host, ev.MailFrom)[0].address == sender
    out = host.feed("RCPT TO:<\u7528\u6237@\u4f8b\u5b50.example>\r\n".encode())
    assert codes(out) == ["250 2.1.5"]


def test_non_ascii_recipient_without_smtputf8_is_553() -> None:
    assert rcpt("TO:<m\u00fcller@d.example>") == ["553 5.6.7"]
    assert rcpt("TO:<m\u00fcller@d.example>", "FROM:<a@b.example> SMTPUTF8") == ["250 2.1.5"]


def test_non_utf8_command_is_500() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(b"MAIL FROM:<\xff@b.example>\r\n")) == ["500 5.5.1"]


def test_nested_mail_and_rcpt_before_mail() -> None:
    transcript(
        open_host(),
        """
        C: EHLO c
        S: 250
        C: RCPT TO:<c@d.example>
        S: 503 5.5.1
        C: DATA
        S: 503 5.5.1
        C: BDAT 0 LAST
        S: 503 5.5.1
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1
        C: DATA
        S: 503 5.5.1
        C: RCPT TO:<c@d.example>
        S: 250 2.1.5
        C: AUTH PLAIN
        S: 503 5.5.1
        """,
    )


def test_max_recipients() -> None:
    host = open_host(max_recipients=2)
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    out = host.feed(
        b"RCPT TO:<r1@d.example>\r\nRCPT TO:<r2@d.example>\r\nRCPT TO:<r3@d.example>\r\n"
    )
    assert codes(out) == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]
    assert host.session.transaction.recipients == ["r1@d.example", "r2@d.example"]
    assert len(of_type(host, ev.RcptTo)) == 2
    assert codes(host.feed(b"DATA\r\nx\r\n.\r\n")) == ["354", "250 2.0.0"]
    assert host.session.errors == 0  # 452 is not a protocol error


def test_rejected_recipients_do_not_count_towards_max() -> None:
    host = open_host(max_recipients=1)
    host.reject_rcpt = {"no@d.example"}
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    out = host.feed(
        b"RCPT TO:<no@d.example>\r\nRCPT TO:<ok@d.example>\r\nRCPT TO:<x@d.example>\r\n"
    )
    assert codes(out) == ["550 5.1.1", "250 2.1.5", "452 4.5.3"]


# --- sequence errors and require_auth ---------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>", b"DATA", b"BDAT 0 LAST", b"AUTH PLAIN"],
)
@pytest.mark.parametrize("require_auth", [True, False])
def test_before_ehlo_503_beats_530(line: bytes, require_auth: bool) -> None:
    host = make_host(require_auth=require_auth, auth_mechanisms=("PLAIN",))
    assert codes(host.feed(line + b"\r\n")) == ["503 5.5.1"]
    assert host.session.state is State.CONNECTED


@pytest.mark.parametrize(
    "line",
    [b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>", b"DATA", b"BDAT 0 LAST",
     b"VRFY joe", b"HELP", b"EXPN list"],
)
def test_after_ehlo_require_auth_530(line: bytes) -> None:
    host = make_host(require_auth=True, auth_mechanisms=("PLAIN",))
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(line + b"\r\n")) == ["530 5.7.0"]


@pytest.mark.parametrize("line", [b"NOOP", b"RSET", b"EHLO c", b"HELO c", b"QUIT"])
def test_require_auth_exempt_commands(line: bytes) -> None:
    host = make_host(require_auth=True)
    host.feed(b"EHLO c\r\n")
    assert not codes(host.feed(line + b"\r\n"))[0].startswith("530")


def test_auth_after_helo_is_503() -> None:
    host = make_host(auth_mechanisms=("PLAIN",))
    host.feed(b"HELO c\r\n")
    assert codes(host.feed(b"AUTH PLAIN AHUAcA==\r\n")) == ["503 5.5.1"]
    assert of_type(host, ev.AuthStart) == []
    assert host.session.user is None


def test_auth_after_success_and_in_transaction() -> None:
    host = make_host(auth_mechanisms=("PLAIN",))
    transcript(
        host,
        """
        C: EHLO c
        S: 250
        C: MAIL FROM:<a@b.example>
        S: 530 5.7.0
        C: AUTH PLAIN AHUAcA==
        S: 235 2.7.0
        C: AUTH PLAIN AHUAcA==
        S: 503 5.5.1
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0
        C: AUTH PLAIN AHUAcA==
        S: 503 5.5.1
        C: RCPT TO:<c@d.example>
        S: 250 2.1.5
        C: AUTH PLAIN AHUAcA==
        S: 503 5.5.1
        """,
    )
    assert len(of_type(host, ev.AuthStart)) == 1


def test_auth_in_transaction_without_require_auth() -> None:
    host = open_host(auth_mechanisms=("PLAIN",))
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    assert host.feed(b"AUTH PLAIN AHUAcA==\r\n") == r.AUTH_IN_TRANSACTION.to_bytes()
    assert host.session.user is None


# --- RSET, NOOP, VRFY, EXPN, HELP, QUIT --------------------------------------------


def test_rset() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert codes(host.feed(b"RSET\r\n")) == ["250 2.0.0"]
    assert host.session.state is State.READY
    assert host.session.transaction == Transaction()
    assert codes(host.feed(b"RSET now\r\n")) == ["501 5.5.4"]


def test_rset_before_ehlo_keeps_connected() -> None:
    host = open_host()
    assert codes(host.feed(b"RSET\r\n")) == ["250 2.0.0"]
    assert host.session.state is State.CONNECTED
    assert codes(host.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["503 5.5.1"]


@pytest.mark.parametrize(
    "state_setup", [b"", b"EHLO c\r\n", b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n"]
)
def test_noop_anywhere(state_setup: bytes) -> None:
    host = make_host(require_auth=True)
    host.feed(state_setup)
    assert host.feed(b"NOOP\r\n") == r.OK.to_bytes()
    assert host.feed(b"NOOP with text\r\n") == r.OK.to_bytes()


def test_vrfy_expn_help() -> None:
    transcript(
        open_host(),
        """
        C: VRFY joe
        S: 252 2.5.0
        C: VRFY
        S: 501 5.5.4
        C: EXPN staff
        S: 502 5.5.1
        C: HELP
        S: 214 2.0.0
        C: HELP MAIL
        S: 214 2.0.0
        """,
    )


def test_quit_replies_221_and_closes() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    out = host.feed(b"QUIT\r\nNOOP\r\n")
    assert out == r.CLOSING.to_bytes()
    assert codes(out) == ["221 2.0.0"]
    assert host.session.closed and host.session.state is State.CLOSED
    assert isinstance(host.events[-1], ev.Closed)
    assert host.feed(b"NOOP\r\n") == b""
    assert host.session.buffered == 0


# --- unknown commands, max_errors ---------------------------------------------------

@pytest.mark.parametrize("state", list(SETUPS))
@pytest.mark.parametrize("line", [b"FOO", b"XYZZY arg", b"", b"MAIL2 FROM:<a@b>", b"\xc3\xa9HLO x"])
def test_unknown_command_500_in_every_state(state: State, line: bytes) -> None:
    host = open_host()
    host.feed(SETUPS[state])
    assert host.session.state is state
    assert host.feed(line + b"\r\n") == r.UNKNOWN_COMMAND.to_bytes()
    assert host.session.state is state
    assert host.session.errors == 1


def test_unknown_command_500_with_require_auth_before_ehlo() -> None:
    host = make_host(require_auth=True)
    assert codes(host.feed(b"FOO\r\n")) == ["500 5.5.1"]


@pytest.mark.parametrize("max_errors", [1, 2, 5])
def test_max_errors_nth_error_is_421_and_closes(max_errors: int) -> None:
    host = open_host(max_errors=max_errors)
    out = host.feed(b"FOO\r\n" * (max_errors - 1))
    assert codes(out) == ["500 5.5.1"] * (max_errors - 1)
    assert not host.session.closed
    out = host.feed(b"RCPT TO:<c@d.example>\r\nNOOP\r\n")
    assert codes(out) == ["421 4.7.0"]
    assert out == r.TOO_MANY_ERRORS.to_bytes()
    assert host.session.closed
    assert isinstance(host.events[-1], ev.Closed)
    assert host.feed(b"NOOP\r\n") == b""


def test_max_errors_counts_syntax_and_sequence_errors_not_530() -> None:
    host = make_host(max_errors=4, require_auth=True)
    out = host.feed(
        b"MAIL FROM:<a@b.example>\r\n"  # 503
        b"EHLO\r\n"  # 501
        b"EHLO c\r\n"  # 250, not counted
        b"NOOP\r\n"  # 250
        b"MAIL FROM:<a@b.example>\r\n"  # 530: policy, not counted (README.md)
        b"EXPN x\r\n"  # 530
        b"FROB\r\n"  # 500
        b"STARTTLS\r\n"  # 502: the 4th error
        b"NOOP\r\n"
    )
    assert codes(out) == ["503 5.5.1", "501 5.5.4", "250", "250 2.0.0", "530 5.7.0",
                          "530 5.7.0", "500 5.5.1", "421 4.7.0"]
    assert host.session.closed


def test_non_protocol_errors_do_not_count() -> None:
    host = open_host(max_errors=2, max_message_size=10, max_recipients=1)
    host.feed(b"EHLO c\r\n")
    out = host.feed(
        b"MAIL FROM:<a@b.example> SIZE=11\r\n"
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\n"
        b"RSET\r\nMAIL FROM:<a@b.example>\r\n"
    )
    assert codes(out) == ["552 5.3.4", "250 2.1.0", "250 2.1.5", "452 4.5.3", "250 2.0.0",
                          "250 2.1.0"]
    assert host.session.errors == 0 and not host.session.closed
