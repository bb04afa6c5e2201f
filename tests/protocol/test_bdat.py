"""BDAT (CHUNKING, RFC 3030): counted chunks, LAST, refusals that still consume
their octets, size limit."""

from __future__ import annotations

import pytest

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.states import Mode, State
from tests.protocol.host import MemoryHost, codes, make_host, mode_or_state, of_type, open_host

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"


def ready(**params: object) -> MemoryHost:
    host = open_host(**params)
    assert codes(host.feed(ENVELOPE)) == ["250", "250 2.1.0", "250 2.1.5"]
    return host


def test_chunks_and_last() -> None:
    host = ready()
    out = host.feed(b"BDAT 5\r\nhello")
    assert out == r.CHUNK_ACCEPTED.to_bytes()
    assert host.session.state is State.BDAT
    out = host.feed(b"BDAT 8 LAST\r\n, world")
    assert out == b"" and host.session.mode is Mode.BDAT  # one octet still to come
    out = host.feed(b"!")
    assert out == r.MESSAGE_ACCEPTED.to_bytes()
    assert host.messages == [b"hello, world!"]
    assert mode_or_state(host, "state") is State.READY
    assert mode_or_state(host, "mode") is Mode.COMMAND
    assert of_type(host, ev.DataStart) == [ev.DataStart(bdat=True)]
    assert of_type(host, ev.DataEnd) == [ev.DataEnd(None)]


def test_last_is_case_insensitive_and_pipelined() -> None:
    host = ready()
    out = host.feed(b"BDAT 3\r\nabcBDAT 3 last\r\ndefMAIL FROM:<a@b.example>\r\n")
    assert codes(out) == ["250 2.0.0", "250 2.0.0", "250 2.1.0"]
    assert host.messages == [b"abcdef"]


def test_bdat_0_last() -> None:
    host = ready()
    assert codes(host.feed(b"BDAT 0 LAST\r\n")) == ["250 2.0.0"]
    assert host.messages == [b""]
    assert host.session.state is State.READY


def test_bdat_0_then_last() -> None:
    host = ready()
    assert codes(host.feed(b"BDAT 0\r\nBDAT 2 LAST\r\nhi")) == ["250 2.0.0", "250 2.0.0"]
    assert host.messages == [b"hi"]


def test_bdat_binary_content_is_verbatim() -> None:
    """No dot-stuffing, no framing: "\\r\\n.\\r\\n", bare LFs and commands are just octets."""
    payload = b"line\r\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@d.example>\r\nDATA\r\n" \
        b"..\r\n\n.\n\x00\xff\r.\r"
    host = ready()
    out = host.feed(b"BDAT %d LAST\r\n" % len(payload) + payload)
    assert codes(out) == ["250 2.0.0"]
    assert host.messages == [payload]
    assert len(of_type(host, ev.MailFrom)) == 1


@pytest.mark.parametrize("cut", range(0, 40))
def test_bdat_split_anywhere(cut: int) -> None:
    wire = b"BDAT 7\r\nab\r\n.\r\nBDAT 4 LAST\r\ncd\r\nNOOP\r\n"
    host = ready()
    out = host.feed(wire[:cut]) + host.feed(wire[cut:])
    assert codes(out) == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    assert host.messages == [b"ab\r\n.\r\ncd\r\n"]


@pytest.mark.parametrize(
    ("setup", "reply"),
    [
        (b"", "503 5.5.1"),  # before EHLO
        (b"EHLO c\r\n", "503 5.5.1"),  # no MAIL
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", "503 5.5.1"),  # no RCPT
    ],
)
def test_bdat_out_of_sequence_consumes_its_octets(setup: bytes, reply: str) -> None:
    host = open_host()
    host.feed(setup)
    state = host.session.state
    chunk = b"QUIT\r\nRSET\r\n"
    out = host.feed(b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert codes(out) == [reply, "250 2.0.0"]
    assert not host.session.closed
    assert host.session.state is state
    assert of_type(host, ev.DataChunk) == []


def test_bdat_530_consumes_its_octets() -> None:
    host = make_host(require_auth=True)
    host.feed(b"EHLO c\r\n")
    chunk = b"QUIT\r\n"
    assert codes(host.feed(b"BDAT 6 LAST\r\n" + chunk + b"NOOP\r\n")) == ["530 5.7.0", "250 2.0.0"]
    assert not host.session.closed


def test_bdat_refused_chunk_in_pieces() -> None:
    host = open_host()
    host.feed(b"EHLO c\r\n")
    assert codes(host.feed(b"BDAT 10\r\nQUIT")) == ["503 5.5.1"]
    assert host.session.mode is Mode.BDAT
    assert host.feed(b"\r\nQUIT") == b""
    assert mode_or_state(host, "mode") is Mode.COMMAND  # all 10 octets consumed
    assert codes(host.feed(b"NOOP\r\n")) == ["250 2.0.0"]
    assert not host.session.closed


def test_bdat_rejected_by_host_consumes_its_octets() -> None:
    host = ready()
    host.reject_data = r.TRANSACTION_FAILED
    chunk = b"RSET\r\nQUIT\r\n"
    out = host.feed(b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert codes(out) == ["554 5.3.0", "250 2.0.0"]
    assert not host.session.closed
    assert host.session.state is State.READY and host.session.mode is Mode.COMMAND
    assert of_type(host, ev.DataChunk) == []


def test_bdat_last_rejected_by_host_consumes_its_octets() -> None:
    host = ready()
    host.reject_data = r.TRANSACTION_FAILED
    out = host.feed(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert codes(out) == ["554 5.3.0", "250 2.0.0"]
    assert of_type(host, ev.DataEnd) == []
    assert host.messages == []


def test_bdat_after_last_is_503() -> None:
    host = ready()
    out = host.feed(b"BDAT 1 LAST\r\nxBDAT 4 LAST\r\nQUITNOOP\r\n")
    assert codes(out) == ["250 2.0.0", "503 5.5.1", "250 2.0.0"]
    assert host.messages == [b"x"]


def test_data_after_bdat_is_503() -> None:
    host = ready()
    assert codes(host.feed(b"BDAT 2\r\nab")) == ["250 2.0.0"]
    assert codes(host.feed(b"DATA\r\n")) == ["503 5.5.1"]
    assert host.session.state is State.BDAT
    assert codes(host.feed(b"BDAT 1 LAST\r\nc")) == ["250 2.0.0"]
    assert host.messages == [b"abc"]


@pytest.mark.parametrize(
    ("line", "reply"),
    [(b"MAIL FROM:<a@b.example>", "503 5.5.1"), (b"RCPT TO:<e@d.example>", "503 5.5.1"),
     (b"AUTH PLAIN", "503 5.5.1"), (b"FOO", "500 5.5.1"), (b"NOOP", "250 2.0.0")],
)
def test_commands_between_chunks(line: bytes, reply: str) -> None:
    host = ready()
    host.feed(b"BDAT 2\r\nab")
    assert codes(host.feed(line + b"\r\n")) == [reply]
    assert host.session.state is State.BDAT


def test_rset_between_chunks_drops_the_message() -> None:
    host = ready()
    host.feed(b"BDAT 2\r\nab")
    assert codes(host.feed(b"RSET\r\nBDAT 1 LAST\r\nc")) == ["250 2.0.0", "503 5.5.1"]
    assert host.messages == []
    assert host.session.state is State.READY


@pytest.mark.parametrize(
    "arg", [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT +1", b"BDAT 5 FIRST", b"BDAT 5 LAST more",
            b"BDAT 1.5", b"BDAT " + b"9" * 21]
)
def test_bdat_syntax(arg: bytes) -> None:
    """RFC 3030 section 3: a malformed chunk size or end marker is 501 5.5.4 (RFC 3463:
    invalid command arguments), and nothing of the line is read as a chunk."""
    host = ready()
    assert codes(host.feed(arg + b"\r\n")) == ["501 5.5.4"]
    assert host.session.state is State.RCPT and host.session.mode is Mode.COMMAND


def test_bdat_over_the_limit_last() -> None:
    host = ready(max_message_size=10)
    out = host.feed(b"BDAT 6\r\n123456BDAT 6 LAST\r\n789012")
    assert codes(out) == ["250 2.0.0", "552 5.3.4"]
    assert host.messages == []
    assert sum(len(c.data) for c in of_type(host, ev.DataChunk)) <= 10
    assert of_type(host, ev.DataEnd) == [ev.DataEnd(r.MESSAGE_TOO_BIG)]
    assert codes(host.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["250 2.1.0"]


def test_bdat_over_the_limit_mid_message() -> None:
    host = ready(max_message_size=10)
    out = host.feed(b"BDAT 20\r\n" + b"x" * 20 + b"BDAT 4 LAST\r\nQUIT")
    # the oversized chunk ends the transaction; the next chunk is refused and dropped
    assert codes(out) == ["552 5.3.4", "503 5.5.1"]
    assert host.session.state is State.READY and not host.session.closed
    assert host.messages == []
    out = host.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 2 LAST\r\nok")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    assert host.messages == [b"ok"]


def test_bdat_exactly_at_the_limit() -> None:
    host = ready(max_message_size=10)
    assert codes(host.feed(b"BDAT 10 LAST\r\n" + b"x" * 10)) == ["250 2.0.0"]


def test_huge_bdat_streams_without_buffering() -> None:
    host = ready(max_message_size=1_000_000)
    size = 3_000_000
    assert host.feed(b"BDAT %d LAST\r\n" % size) == b""
    for _ in range(size // 100_000 - 1):
        assert host.feed(b"y" * 100_000) == b""
        assert host.session.buffered == 0
    assert codes(host.feed(b"y" * 100_000 + b"NOOP\r\n")) == ["552 5.3.4", "250 2.0.0"]
