"""The session's input: one buffer, and one reader per input ``Mode``.

Theory of operation
-------------------
The session keeps what it received in one ``Input`` and reads it with the
reader of its current mode (the shape of h11's ``_readers.py``). A reader's
``read`` consumes some input and returns one *item*, or None when it needs
more input:

- ``LineReader`` (COMMAND, AUTH_RESPONSE) returns a line without its line
  ending, or ``Overlong`` when the line exceeds its limit: 512 octets for a
  command, 12288 for an AUTH command or response line (RFC 5321 section
  4.5.3.1.4, RFC 4954 section 4). With no LF within 12288 octets the line is
  known to be overlong before its end arrives: ``Overlong(complete=False)``,
  and the session switches to
- ``DiscardReader`` (DISCARD_LINE), which drops input up to the LF, then
  returns ``Overlong(complete=True)``: memory stays bounded however long the
  line.
- ``DataReader`` (DATA) hands all input to its ``DataFramer`` and returns a
  ``Body``: the unstuffed pieces, and ``end`` once ``<CRLF>.<CRLF>`` was
  seen; what followed it goes back into the input for the command reader.
- ``ChunkReader`` (BDAT) takes up to the octets its chunk still needs and
  returns a ``Body``, ``end`` once the count is complete (RFC 3030 section
  2). A refused chunk is read the same way and dropped: its octets are never
  parsed as commands.

A reader holds only its own mode's state (the framer, the octets still due),
so a mode ends by replacing the reader. The body's fast path: while a DATA
or BDAT reader is current, a received chunk is kept as it came (``Input``'s
``_whole``) and handed on without a copy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from smtpgate.protocol.framing import DataFramer
from smtpgate.protocol.states import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT, Mode


class Input:
    """Received bytes not read yet. ``_whole`` is set only while ``_buf`` is empty."""

    __slots__ = ("_buf", "_whole")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._whole: bytes | None = None

    def __len__(self) -> int:
        whole = self._whole
        return len(self._buf) + (len(whole) if whole is not None else 0)

    def feed(self, data: bytes, *, keep_whole: bool) -> None:
        if keep_whole and not self._buf and self._whole is None:
            self._whole = data
            return
        self.buffer().extend(data)

    def buffer(self) -> bytearray:
        """All input as one mutable buffer (the line readers edit it in place)."""
        if self._whole is not None:
            self._buf += self._whole
            self._whole = None
        return self._buf

    def take_all(self) -> bytes:
        """Everything; a whole received chunk is handed on as it came."""
        whole = self._whole
        if whole is not None:
            self._whole = None
            return whole
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` octets from the front; a whole received chunk is not copied."""
        whole = self._whole
        if whole is not None and len(whole) <= limit:
            self._whole = None
            return whole
        buf = self.buffer()
        if limit >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:limit])
            del buf[:limit]
        return data

    def put_back(self, data: bytes) -> None:
        """Return unread bytes to the front (only ever into an empty input)."""
        self.buffer()[:0] = data

    def clear(self) -> None:
        self._buf.clear()
        self._whole = None


class LineKind(enum.Enum):
    __hash__ = object.__hash__  # looked up per line; see State in protocol/states.py

    COMMAND = "command"
    AUTH_COMMAND = "auth-command"
    AUTH_RESPONSE = "auth-response"


_LINE_LIMIT = {
    LineKind.COMMAND: COMMAND_LINE_LIMIT,
    LineKind.AUTH_COMMAND: AUTH_LINE_LIMIT,
    LineKind.AUTH_RESPONSE: AUTH_LINE_LIMIT,
}


@dataclass(frozen=True, slots=True)
class Overlong:
    kind: LineKind
    complete: bool  # the line's LF was consumed (else: discard up to it first)


@dataclass(frozen=True, slots=True)
class Body:
    pieces: tuple[bytes, ...] = field(repr=False)  # message octets, in order
    end: bool  # the body (DATA) or the chunk (BDAT) is complete
    bare_line_ending: bool = False  # DATA only: a bare CR or LF was seen so far


class LineReader:
    __slots__ = ("mode",)
    reads_body = False

    def __init__(self, mode: Mode) -> None:
        self.mode = mode

    def read(self, inp: Input) -> bytes | Overlong | None:
        buf = inp.buffer()
        idx = buf.find(b"\n", 0, AUTH_LINE_LIMIT + 1)
        if idx < 0:
            if len(buf) > AUTH_LINE_LIMIT:
                return Overlong(self._kind(buf), complete=False)
            return None
        line = bytes(buf[:idx])
        del buf[: idx + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        kind = self._kind(line)
        if len(line) + 2 > _LINE_LIMIT[kind]:
            return Overlong(kind, complete=True)
        return line

    def _kind(self, line: bytes | bytearray) -> LineKind:
        if self.mode is Mode.AUTH_RESPONSE:
            return LineKind.AUTH_RESPONSE
        return LineKind.AUTH_COMMAND if line[:5].upper() == b"AUTH " else LineKind.COMMAND


COMMAND_LINES = LineReader(Mode.COMMAND)
AUTH_RESPONSE_LINES = LineReader(Mode.AUTH_RESPONSE)


class DiscardReader:
    __slots__ = ("kind",)
    mode = Mode.DISCARD_LINE
    reads_body = False

    def __init__(self, kind: LineKind) -> None:
        self.kind = kind

    def read(self, inp: Input) -> Overlong | None:
        buf = inp.buffer()
        idx = buf.find(b"\n")
        if idx < 0:
            buf.clear()
            return None
        del buf[: idx + 1]
        return Overlong(self.kind, complete=True)


class DataReader:
    __slots__ = ("framer",)
    mode = Mode.DATA
    reads_body = True  # DATA or BDAT: the host's data timeout applies

    def __init__(self) -> None:
        self.framer = DataFramer()

    def read(self, inp: Input) -> Body | None:
        data = inp.take_all()
        if not data:
            return None
        result = self.framer.feed(data)
        if result.done:
            inp.put_back(result.rest)
        return Body(result.pieces, result.done, self.framer.bare_line_ending)


class ChunkReader:
    __slots__ = ("discard", "last", "remaining")
    mode = Mode.BDAT
    reads_body = True

    def __init__(self, size: int, *, last: bool, discard: bool) -> None:
        self.remaining = size
        self.last = last
        self.discard = discard  # a refused chunk: read and dropped

    def read(self, inp: Input) -> Body | None:
        if self.remaining and not inp:
            return None
        data = inp.take(self.remaining)
        self.remaining -= len(data)
        return Body(() if self.discard or not data else (data,), self.remaining == 0)


Reader = LineReader | DiscardReader | DataReader | ChunkReader
