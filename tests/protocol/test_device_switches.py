"""The device listener switches in the pure session: AUTH=, AUTH after HELO, bare LF
normalize, 8-bit without BODY=8BITMIME. Each is off by default and tested both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.protocol.params import ehlo_keywords
from smtpgate.protocol.session import has_bare_cr, normalize_bare_lf
from tests.protocol.host import codes, make_host, open_host, session_params

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
LOGIN = b"AUTH PLAIN AHUAcA==\r\n"  # "\0u\0p": the MemoryHost's one account


def test_auth_equals_line_only_when_asked() -> None:
    mechs = ("CRAM-MD5", "PLAIN", "LOGIN")
    off = ehlo_keywords(session_params(auth_mechanisms=mechs))
    on = ehlo_keywords(session_params(auth_mechanisms=mechs, advertise_auth_equals=True))
    assert "AUTH CRAM-MD5 PLAIN LOGIN" in off and not any(w.startswith("AUTH=") for w in off)
    assert on[-2:] == ["AUTH CRAM-MD5 PLAIN LOGIN", "AUTH=CRAM-MD5 PLAIN LOGIN"]
    # Nothing usable now (e.g. plaintext only, without TLS): neither line.
    none = ehlo_keywords(session_params(auth_mechanisms=(), advertise_auth_equals=True))
    assert not any(w.startswith("AUTH") for w in none)


def test_auth_equals_on_the_wire() -> None:
    host = make_host(auth_mechanisms=("PLAIN", "LOGIN"), advertise_auth_equals=True)
    out = host.feed(b"EHLO c\r\n").decode()
    assert out.endswith("250-AUTH PLAIN LOGIN\r\n250 AUTH=PLAIN LOGIN\r\n"), out


@pytest.mark.parametrize(("after_helo", "expected"), [(False, "503 5.5.1"), (True, "235 2.7.0")])
def test_auth_after_helo(after_helo: bool, expected: str) -> None:
    host = make_host(auth_mechanisms=("PLAIN",), auth_after_helo=after_helo)
    assert codes(host.feed(b"HELO c\r\n" + LOGIN)) == ["250", expected]


def test_auth_after_helo_keeps_every_other_refusal() -> None:
    host = make_host(auth_mechanisms=("PLAIN",), auth_after_helo=True)
    assert codes(host.feed(LOGIN)) == ["503 5.5.1"]  # before any greeting
    assert codes(host.feed(b"HELO c\r\nMAIL FROM:<a@b.example>\r\n")) == ["250", "530 5.7.0"]
    assert codes(host.feed(LOGIN + LOGIN)) == ["235 2.7.0", "503 5.5.1"]  # only once
    out = host.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n" + LOGIN)
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "503 5.5.1"]  # not in a transaction


def send(body: bytes, **params: object) -> tuple[list[str], list[bytes]]:
    host = open_host(**params)
    out = host.feed(ENVELOPE + b"DATA\r\n" + body)
    assert codes(out)[:4] == ["250", "250 2.1.0", "250 2.1.5", "354"]
    return codes(out)[4:], host.messages


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (b"Subject: x\n\nline one\nline two\r\n.\r\n",
         b"Subject: x\r\n\r\nline one\r\nline two\r\n"),
        (b"a\r\nb\nc\r\n.\r\n", b"a\r\nb\r\nc\r\n"),
        (b"\n\n\r\n.\r\n", b"\r\n\r\n\r\n"),
    ],
)
def test_bare_lf_normalize_stores_crlf(body: bytes, stored: bytes) -> None:
    assert send(body) == (["550 5.5.2"], [])  # the default: refused
    assert send(body, normalize_bare_lf=True) == (["250 2.0.0"], [stored])


@pytest.mark.parametrize("body", [b"a\rb\r\n.\r\n", b"a\nb\rc\r\n.\r\n", b"a\r\r\n.\r\n"])
def test_bare_cr_is_still_refused_when_normalizing(body: bytes) -> None:
    assert send(body, normalize_bare_lf=True) == (["550 5.5.2"], [])


@pytest.mark.parametrize(
    ("fake_end", "stored"),
    [
        (b"\n.\n", b"\r\n.\r\n"),
        (b"\n.\r\n", b"\r\n.\r\n"),
        (b"\r\n.\n", b"\r\n\r\n"),  # a "." after a real CRLF is dot-stuffing: removed
    ],
)
def test_normalize_never_ends_data_early(fake_end: bytes, stored: bytes) -> None:
    """The fake end becomes CRLF-separated text of the message, never its end."""
    body = b"hi" + fake_end + b"MAIL FROM:<x@y.example>\r\n.\r\nNOOP\r\n"
    result, messages = send(body, normalize_bare_lf=True)
    assert result == ["250 2.0.0", "250 2.0.0"]  # the message, then NOOP: nothing in between
    assert messages == [b"hi" + stored + b"MAIL FROM:<x@y.example>\r\n"]


def test_normalize_split_at_every_byte() -> None:
    body = b"Subject: s\n\n" + b"x" * 9000 + b"\nend\r\n.\r\n"
    host = open_host(normalize_bare_lf=True)
    host.feed(ENVELOPE + b"DATA\r\n")
    out = b"".join(host.feed(body[i : i + 1]) for i in range(len(body)))
    assert codes(out) == ["250 2.0.0"]
    assert host.messages == [b"Subject: s\r\n\r\n" + b"x" * 9000 + b"\r\nend\r\n"]


@given(st.binary(max_size=200).filter(lambda b: b"\r" not in b))
def test_normalize_turns_every_lf_into_crlf(data: bytes) -> None:
    out = normalize_bare_lf(data)
    assert out.replace(b"\r\n", b"\n") == data and not has_bare_cr(out)
    assert out.count(b"\n") == out.count(b"\r\n")


@pytest.mark.parametrize(
    ("data", "normalized", "bare_cr"),
    [
        (b"a\r\nb", b"a\r\nb", False),
        (b"a\nb\r\n", b"a\r\nb\r\n", False),
        (b"a\r\r\n", b"a\r\r\n", True),
        (b"a\rb\n", b"a\rb\r\n", True),
        (b"\r", b"\r", True),
    ],
)
def test_normalize_leaves_crlf_and_bare_cr_alone(
    data: bytes, normalized: bytes, bare_cr: bool
) -> None:
    assert normalize_bare_lf(data) == normalized
    assert has_bare_cr(normalized) is bare_cr


EIGHT_BIT = "Subject: caf\u00e9\r\n\r\nd\u00e9j\u00e0 vu\r\n.\r\n".encode()


@pytest.mark.parametrize(
    ("mail_params", "accept", "expected"),
    [
        (b"", False, "554 5.6.0"),
        (b" BODY=7BIT", False, "554 5.6.0"),
        (b" BODY=8BITMIME", False, "250 2.0.0"),
        (b" body=8bitmime", False, "250 2.0.0"),
        (b" SMTPUTF8", False, "250 2.0.0"),
        (b"", True, "250 2.0.0"),
    ],
)
def test_eight_bit_needs_8bitmime_unless_accepted(
    mail_params: bytes, accept: bool, expected: str
) -> None:
    host = open_host(accept_eight_bit=accept)
    out = host.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>" + mail_params + b"\r\n"
                    b"RCPT TO:<c@d.example>\r\nDATA\r\n" + EIGHT_BIT + b"NOOP\r\n")
    assert codes(out)[3:] == ["354", expected, "250 2.0.0"]  # the session goes on
    assert host.messages == ([EIGHT_BIT[:-3]] if expected.startswith("250") else [])


def test_seven_bit_data_is_unaffected() -> None:
    assert send(b"Subject: plain\r\n\r\nascii\r\n.\r\n") == (
        ["250 2.0.0"], [b"Subject: plain\r\n\r\nascii\r\n"])
