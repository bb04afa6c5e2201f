"""DATA: framing at <CRLF>.<CRLF>, dot-unstuffing, SMTP smuggling, size limit."""

from __future__ import annotations

import pytest

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.states import Mode, State
from smtpgate.protocol.transaction import Transaction
from tests.protocol.host import MemoryHost, codes, of_type, open_host

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
SMUGGLED = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@d.example>\r\nDATA\r\nsmuggled\r\n"


def in_data(**params: object) -> MemoryHost:
    host = open_host(**params)
    assert codes(host.feed(ENVELOPE + b"DATA\r\n")) == ["250", "250 2.1.0", "250 2.1.5", "354"]
    assert host.session.mode is Mode.DATA
    return host


def test_simple_message() -> None:
    host = in_data()
    out = host.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    assert out == r.MESSAGE_ACCEPTED.to_bytes()
    assert host.messages == [b"Subject: hi\r\n\r\nbody\r\n"]
    assert host.session.state is State.READY and host.session.mode is Mode.COMMAND
    assert host.session.transaction == Transaction()
    assert of_type(host, ev.DataStart) == [ev.DataStart(bdat=False)]
    assert of_type(host, ev.DataEnd) == [ev.DataEnd(None)]


def test_354_has_no_enhanced_code() -> None:
    assert r.START_MAIL_INPUT.to_bytes().startswith(b"354 End")


def test_empty_message() -> None:
    host = in_data()
    assert codes(host.feed(b".\r\n")) == ["250 2.0.0"]
    assert host.messages == [b""]


def test_data_with_argument_is_501() -> None:
    host = open_host()
    host.feed(ENVELOPE)
    assert codes(host.feed(b"DATA now\r\n")) == ["501 5.5.4"]
    assert host.session.state is State.RCPT and host.session.mode is Mode.COMMAND


def test_data_rejected_by_host_reads_commands() -> None:
    host = open_host()
    host.reject_data = Reply(554, "5.5.1", "No valid recipients")
    host.feed(ENVELOPE)
    assert codes(host.feed(b"DATA\r\nNOOP\r\n")) == ["554 5.5.1", "250 2.0.0"]
    assert host.session.mode is Mode.COMMAND


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..leading\r\n.\r\n", b".leading\r\n"),
        (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
        (b"a.\r\n.b\r\n.\r\n", b"a.\r\nb\r\n"),  # a lone leading dot is removed too
        (b"x\r\n. \r\n.\r\n", b"x\r\n \r\n"),
        (b"x\r\n.\t\r\n..\r\n.\r\n", b"x\r\n\t\r\n.\r\n"),
        (b"no-final-crlf\r\n.\r\n", b"no-final-crlf\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
    ],
)
def test_dot_unstuffing(wire: bytes, body: bytes) -> None:
    host = in_data()
    assert codes(host.feed(wire)) == ["250 2.0.0"]
    assert host.messages == [body]


def test_commands_after_the_end_are_read() -> None:
    host = in_data()
    out = host.feed(b"x\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert codes(out) == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354"]
    assert codes(host.feed(b"y\r\n.\r\nQUIT\r\n")) == ["250 2.0.0", "221 2.0.0"]
    assert host.messages == [b"x\r\n", b"y\r\n"]


def test_command_looking_lines_are_body() -> None:
    host = in_data()
    wire = b"QUIT\r\nRSET\r\nMAIL FROM:<x@y.example>\r\n.\r\n"
    assert codes(host.feed(wire)) == ["250 2.0.0"]
    assert host.messages == [b"QUIT\r\nRSET\r\nMAIL FROM:<x@y.example>\r\n"]


# --- SMTP smuggling ------------------------------------------------------------------
# Each variant is a fake end of data a lenient receiver might honour, followed by a
# smuggled transaction; the real end comes after. The message must be refused
# (550 5.5.2) after the real end, the smuggled lines must stay body, and there is
# never a second message.

FAKE_ENDS = {
    "lf-dot-lf": b"\n.\n",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-crlf": b"\r.\r\n",
    "cr-dot-lf": b"\r.\n",
    "lf-dot-cr": b"\n.\r",
    "crlf-dot-cr-cr-lf": b"\r\n.\r\r\n",
    "crlf-dot-crlf-split-lf": b"\r\n.\n\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\r\x00\n",
}


def smuggling_wire(fake_end: bytes) -> bytes:
    return b"Subject: s\r\n\r\nhello" + fake_end + SMUGGLED + b"\r\n.\r\n"


def assert_smuggling_refused(host: MemoryHost, out: bytes) -> None:
    assert codes(out) == ["550 5.5.2"], out
    assert out == r.BARE_LINE_ENDING.to_bytes()
    assert host.messages == []
    assert len(of_type(host, ev.DataStart)) == 1
    assert len(of_type(host, ev.MailFrom)) == 1
    assert len(of_type(host, ev.RcptTo)) == 1
    assert of_type(host, ev.DataEnd) == [ev.DataEnd(r.BARE_LINE_ENDING)]
    assert host.session.state is State.READY and host.session.mode is Mode.COMMAND


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
def test_smuggling_variant_one_feed(fake_end: bytes) -> None:
    host = in_data()
    assert_smuggling_refused(host, host.feed(smuggling_wire(fake_end)))
    # the next transaction works, and is the only other one
    out = host.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nok\r\n.\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert host.messages == [b"ok\r\n"]


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
def test_smuggling_variant_every_split(fake_end: bytes) -> None:
    wire = smuggling_wire(fake_end)
    for cut in range(len(wire) + 1):
        host = in_data()
        out = host.feed(wire[:cut]) + host.feed(wire[cut:])
        assert_smuggling_refused(host, out)


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
def test_smuggling_variant_byte_by_byte(fake_end: bytes) -> None:
    host = in_data()
    out = b"".join(host.feed(bytes([b])) for b in smuggling_wire(fake_end))
    assert_smuggling_refused(host, out)


def test_dot_crlf_after_bare_lf_at_packet_end() -> None:
    """A packet ending in a bare LF, the next starting with ".\\r\\n"."""
    host = in_data()
    assert host.feed(b"hello\n") == b""
    assert host.feed(b".\r\n" + SMUGGLED) == b""
    assert host.session.mode is Mode.DATA
    assert_smuggling_refused(host, host.feed(b".\r\n"))


def test_dot_crlf_after_bare_cr_at_packet_end() -> None:
    host = in_data()
    assert host.feed(b"hello\r") == b""
    assert host.feed(b".\r\n" + SMUGGLED) == b""
    assert_smuggling_refused(host, host.feed(b"\r\n.\r\n"))


@pytest.mark.parametrize("bare", [b"\n", b"\r", b"a\rb", b"a\nb", b"\r\r\n", b"\n\r"])
def test_any_bare_cr_or_lf_rejects(bare: bytes) -> None:
    host = in_data()
    out = host.feed(b"line\r\n" + bare + b"\r\nmore\r\n.\r\n")
    assert codes(out) == ["550 5.5.2"]
    assert host.messages == []


def test_bare_cr_in_a_very_long_line_rejects() -> None:
    host = in_data()
    assert host.feed(b"x" * 20_000 + b"\r" + b"y" * 20_000) == b""
    assert codes(host.feed(b"\r\n.\r\n")) == ["550 5.5.2"]


def test_bare_cr_just_before_the_end_rejects() -> None:
    host = in_data()
    assert codes(host.feed(b"x\r\r\n.\r\n")) == ["550 5.5.2"]


# --- splits at every boundary ------------------------------------------------------

SPLIT_WIRE = b"Subject: split\r\n\r\n..one\r\nmid.dle\r\n...\r\n.x\r\n\r\nlast line\r\n.\r\n"
SPLIT_BODY = b"Subject: split\r\n\r\n.one\r\nmid.dle\r\n..\r\nx\r\n\r\nlast line\r\n"
TRAILER = b"NOOP\r\n"


@pytest.mark.parametrize("cut", range(len(SPLIT_WIRE + TRAILER) + 1))
def test_split_at_every_point_gives_the_same_message(cut: int) -> None:
    wire = SPLIT_WIRE + TRAILER
    host = in_data()
    out = host.feed(wire[:cut]) + host.feed(wire[cut:])
    assert codes(out) == ["250 2.0.0", "250 2.0.0"]
    assert host.messages == [SPLIT_BODY]


def test_split_byte_by_byte() -> None:
    host = in_data()
    out = b"".join(host.feed(bytes([b])) for b in SPLIT_WIRE + TRAILER)
    assert codes(out) == ["250 2.0.0", "250 2.0.0"]
    assert host.messages == [SPLIT_BODY]


def test_split_at_every_pair_of_points() -> None:
    wire = SPLIT_WIRE + TRAILER
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            host = in_data()
            out = host.feed(wire[:i]) + host.feed(wire[i:j]) + host.feed(wire[j:])
            assert codes(out) == ["250 2.0.0", "250 2.0.0"], (i, j)
            assert host.messages == [SPLIT_BODY], (i, j)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 8191, 8192, 8193, 10_000, 65536])
def test_long_lines_in_chunks(chunk: int) -> None:
    body = b".dotted " + b"x" * 30_000 + b"\r\n" + b"." * 9000 + b"\r\nshort\r\n"
    stuffed = b"." + body.replace(b"\r\n.", b"\r\n..")
    wire = stuffed + b".\r\n"
    host = in_data()
    out = b"".join(host.feed(wire[i : i + chunk]) for i in range(0, len(wire), chunk))
    assert codes(out) == ["250 2.0.0"]
    assert host.messages == [body]


# --- size limit ----------------------------------------------------------------------


def test_message_over_the_limit_is_552_after_the_end() -> None:
    host = in_data(max_message_size=100)
    assert host.feed(b"x" * 98 + b"\r\n") == b""  # 100 octets: still fine
    assert host.feed(b"y\r\n") == b""  # over: keep reading, no reply yet
    assert host.session.mode is Mode.DATA
    assert host.feed(b"z" * 1000 + b"\r\n") == b""
    out = host.feed(b".\r\n")
    assert out == r.MESSAGE_TOO_BIG.to_bytes()
    assert codes(out) == ["552 5.3.4"]
    assert host.messages == []
    assert of_type(host, ev.DataEnd) == [ev.DataEnd(r.MESSAGE_TOO_BIG)]
    chunks = of_type(host, ev.DataChunk)
    assert sum(len(c.data) for c in chunks) <= 100
    out = host.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nsmall\r\n.\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert host.messages == [b"small\r\n"]


def test_message_exactly_at_the_limit_is_accepted() -> None:
    host = in_data(max_message_size=10)
    assert codes(host.feed(b"12345678\r\n.\r\n")) == ["250 2.0.0"]
    assert host.messages == [b"12345678\r\n"]


def test_limit_counts_unstuffed_octets() -> None:
    host = in_data(max_message_size=4)
    assert codes(host.feed(b"..a\r\n.\r\n")) == ["250 2.0.0"]  # ".a\r\n" is 4 octets
    assert host.messages == [b".a\r\n"]


def test_oversize_in_one_big_feed() -> None:
    host = in_data(max_message_size=1000)
    out = host.feed(b"a" * 5_000_000 + b"\r\n.\r\nNOOP\r\n")
    assert codes(out) == ["552 5.3.4", "250 2.0.0"]
    assert host.session.buffered == 0
