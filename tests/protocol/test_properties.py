"""Property tests: the session on random input, the DATA framer on random bodies.

Buffer bound, read from ``readers.py``
--------------------------------------
``receive_data`` appends the whole feed to the session's ``Input``, so right
after it ``buffered <= B + len(feed)`` where B is what was left before.
``next_event`` then lets the current reader consume input until it returns
None, which (with a host that answers every event at once) happens only when:

* ``LineReader`` (COMMAND / AUTH_RESPONSE): no LF in the first
  ``AUTH_LINE_LIMIT + 1`` octets *and* the input is not longer than
  ``AUTH_LINE_LIMIT`` (a longer one is ``Overlong`` and goes to DISCARD_LINE);
* ``DataReader``, ``ChunkReader``, ``DiscardReader``: the input is empty
  (DATA hands everything to the framer, BDAT takes what the chunk still
  needs, DISCARD drops it);
* CLOSED: the input was cleared and ``receive_data`` ignores more.

So at rest ``buffered <= AUTH_LINE_LIMIT`` (12288), and within one call the
input peaks at ``AUTH_LINE_LIMIT + len(feed)``. Separately the DATA framer
holds a partial line of at most ``_MAX_PARTIAL`` (8192) octets. The bound
assumes the host answers awaited events; a host that keeps feeding while
``awaiting_reply`` is true grows the input without limit, so the real host
must stop reading meanwhile.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpgate.protocol import framing
from smtpgate.protocol.framing import DataFramer
from smtpgate.protocol.readers import ChunkReader, DataReader
from smtpgate.protocol.states import AUTH_LINE_LIMIT, Mode, State
from smtpgate.protocol.transaction import Transaction
from tests.protocol.host import make_host

# --- the session on random input ------------------------------------------------------

TOKENS = [
    b"EHLO c\r\n", b"HELO c\r\n", b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=99999999\r\n", b"MAIL FROM:<> AUTH=+2B BODY=8BITMIME\r\n",
    b"RCPT TO:<c@d.example>\r\n", b"RCPT TO:<postmaster>\r\n", b"DATA\r\n", b"BDAT 3\r\n",
    b"BDAT 2 LAST\r\n", b"BDAT 0 LAST\r\n", b"BDAT 20000\r\n", b".\r\n", b"..\r\n",
    b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n", b"\r", b"\r\n", b".", b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AHUAcA==\r\n", b"AUTH PLAIN =\r\n", b"*\r\n", b"AHUAcA==\r\n", b"QQ=\r\n",
    b"STARTTLS\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"EXPN x\r\n", b"HELP\r\n",
    b"QUIT\r\n", b"FOO\r\n", b"A" * 600, b"AUTH " + b"B" * 13000, b"C" * 9000,
    b"\x00\xff\xfe", b"x" * 70,
]
chunk_stream = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=64)), max_size=40
).map(b"".join)
params = st.fixed_dictionaries(
    {
        "require_auth": st.booleans(),
        "starttls_offered": st.booleans(),
        "tls_active": st.booleans(),
        "auth_mechanisms": st.sampled_from([(), ("PLAIN",), ("PLAIN", "LOGIN")]),
        "max_message_size": st.sampled_from([0, 5, 100, 26214400]),
        "max_recipients": st.integers(1, 3),
        "max_errors": st.integers(1, 1000),
    }
)
REPLY_LINE = re.compile(rb"\A[2-5][0-9][0-9][ -][^\r\n]*\Z")
ENHANCED = re.compile(rb"\A([245])[0-9][0-9][ -]([245])\.[0-9]{1,3}\.[0-9]{1,3} ")


def split_points(data: bytes, draw_cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in draw_cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(cuts)] or [b""]


def check_output(out: bytes) -> None:
    if not out:
        return
    assert out.endswith(b"\r\n")
    for line in out[:-2].split(b"\r\n"):
        assert REPLY_LINE.match(line), line
        m = ENHANCED.match(line)
        if line[:1] in (b"4", b"5"):  # every error carries an enhanced code
            assert m is not None, line
        if m is not None:  # of its own class (RFC 3463 section 2)
            assert m.group(1) == m.group(2), line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=chunk_stream, cuts=st.lists(st.integers(0, 10**6), max_size=12), p=params)
def test_random_input_never_raises_and_stays_bounded(
    stream: bytes, cuts: list[int], p: dict[str, object]
) -> None:
    host = make_host(**p)
    s = host.session
    for piece in split_points(stream, cuts):
        before = s.buffered
        s.receive_data(piece)
        assert s.buffered <= before + len(piece)
        assert s.buffered <= AUTH_LINE_LIMIT + len(piece)
        host.pump()
        check_output(s.data_to_send())
        assert isinstance(s.state, State) and isinstance(s.mode, Mode)
        assert s.buffered <= AUTH_LINE_LIMIT
        assert not s.awaiting_reply  # the memory host answers everything
        if s.closed:
            assert s.buffered == 0
        if s.mode in (Mode.DATA, Mode.BDAT, Mode.DISCARD_LINE):
            assert s.buffered == 0
        reader = s._reader
        if isinstance(reader, DataReader):
            assert len(reader.framer._partial) <= framer_partial_limit()
        if isinstance(reader, ChunkReader):
            assert reader.remaining > 0
        if s.state is State.CONNECTED:
            assert s.transaction == Transaction()
        if s.state is State.RCPT:
            assert 1 <= len(s.transaction.recipients) <= int(str(p["max_recipients"]))
    assert s.errors <= int(str(p["max_errors"]))


def framer_partial_limit() -> int:
    return framing._MAX_PARTIAL


@settings(max_examples=200, deadline=None)
@given(stream=chunk_stream, cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_split_does_not_change_the_transcript(stream: bytes, cuts: list[int]) -> None:
    """The same bytes in one feed or many give the same replies and messages."""
    whole = make_host(require_auth=False, auth_mechanisms=("PLAIN",))
    out_whole = whole.feed(stream)
    parts = make_host(require_auth=False, auth_mechanisms=("PLAIN",))
    out_parts = b"".join(parts.feed(piece) for piece in split_points(stream, cuts))
    assert out_parts == out_whole
    assert parts.messages == whole.messages
    assert parts.session.state is whole.session.state


# --- the DATA framer ---------------------------------------------------------------------

line_text = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b".x", b"x.", b". ", b"From x"]),
    st.builds(lambda c, n: c * n, st.sampled_from([b"x", b".", b"ab"]), st.integers(0, 20_000)),
)
crlf_body = st.lists(line_text, max_size=12).map(lambda ls: b"".join(x + b"\r\n" for x in ls))


def stuff(body: bytes) -> bytes:
    """What a client sends (RFC 5321 section 4.5.2): a dot before every line starting with one."""
    return (b"." if body.startswith(b".") else b"") + body.replace(b"\r\n.", b"\r\n..")


def frame(wire: bytes, cuts: list[int]) -> tuple[bytes, bool, bytes, bool]:
    framer = DataFramer()
    body: list[bytes] = []
    rest = b""
    done = False
    for piece in split_points(wire, cuts):
        if done:
            rest += piece
            continue
        if not piece:
            continue
        result = framer.feed(piece)
        body.extend(result.pieces)
        assert len(framer._partial) <= framing._MAX_PARTIAL
        if result.done:
            done, rest = True, result.rest
    return b"".join(body), done, rest, framer.bare_line_ending


def reference(wire: bytes) -> tuple[bytes, bool, bytes, bool]:
    """A one-line-at-a-time model: the end is the first "." line after a CRLF."""
    idx = (b"\r\n" + wire).find(b"\r\n.\r\n")
    if idx < 0:
        raise AssertionError("reference needs a terminated stream")
    raw, rest = wire[:idx], wire[idx + 3 :]
    body = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n")[2:]
    bare = raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n")
    return body, True, rest, bare


trailer = st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n.\r\n", b"\n.\n"])


@settings(max_examples=300, deadline=None)
@given(body=crlf_body, tail=trailer, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_stuffed_crlf_body_round_trips(body: bytes, tail: bytes, cuts: list[int]) -> None:
    wire = stuff(body) + b".\r\n" + tail
    assert frame(wire, cuts) == (body, True, tail, False)


bare_piece = st.sampled_from([b"\r", b"\n", b"\n\r", b"\r\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n"])


@settings(max_examples=300, deadline=None)
@given(
    before=crlf_body, bare=bare_piece, after=crlf_body, tail=trailer,
    cuts=st.lists(st.integers(0, 10**6), max_size=10),
)
def test_bare_cr_or_lf_is_always_flagged(
    before: bytes, bare: bytes, after: bytes, tail: bytes, cuts: list[int]
) -> None:
    body = before + bare + after
    stuffed = stuff(body)
    ending = b".\r\n" if stuffed.endswith(b"\r\n") or not stuffed else b"\r\n.\r\n"
    wire = stuffed + ending + tail
    got_body, done, rest, bare_seen = frame(wire, cuts)
    assert done and bare_seen
    assert rest == tail  # ended at the real end, never at a bare-LF/CR look-alike
    assert (got_body, done, rest, bare_seen) == reference(wire)


noise = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"x", b"\x00"]),
        st.builds(lambda c, n: c * n, st.sampled_from([b"x", b"."]), st.integers(8000, 9000)),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(stream=noise, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_framer_matches_reference_on_any_stream(stream: bytes, cuts: list[int]) -> None:
    wire = stream + b"\r\n.\r\nrest"
    assert frame(wire, cuts) == reference(wire)
