"""DATA body framing: end at ``<CRLF>.<CRLF>``, undo dot-stuffing, spot bare CR/LF.

Theory of operation
-------------------
RFC 5321 section 4.1.1.4: the body ends with a line holding a single ".";
section 4.5.2: a leading "." on any other line is removed. Section 2.3.8:
CR and LF appear only together as CRLF. A bare LF or bare CR never ends the
body (SMTP smuggling, CVE-2023-51764 family); the framer records that it saw
one, and the session rejects the whole message once the real end arrives.

The work is done over whole chunks, never per line in Python: each chunk is
split at its last LF into *complete lines*, scanned at once by ``scan_lines``,
and a *partial line*, kept until more data comes (or flushed once it grows
past ``_MAX_PARTIAL``, so memory stays bounded). ``_at_line_start`` says
whether the previous bytes ended in CRLF, so a "." at the start of the next
chunk is treated as a line start: only a real CRLF, never a bare LF, opens a
line that can end the body.

``scan_lines`` is the optional C extension ``_speedups`` (one memchr-driven
pass) when it was built, else ``_scan_lines`` below (bytes methods: find and
count); both give the same answers, which the tests check on random input.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataFramer", "FrameResult", "scan_lines"]

_END = b"\r\n.\r\n"
_MAX_PARTIAL = 8192  # a partial line longer than this is passed on in pieces


@dataclass(frozen=True, slots=True)
class FrameResult:
    pieces: tuple[bytes, ...]  # unstuffed message bytes from this feed, in order
    done: bool  # the end-of-data line was seen
    rest: bytes  # bytes after the end-of-data line (the next commands)


class DataFramer:
    __slots__ = ("_at_line_start", "_partial", "bare_line_ending")

    def __init__(self) -> None:
        self._at_line_start = True  # the 354 reply's CRLF opens the first line
        self._partial = b""
        self.bare_line_ending = False

    def feed(self, data: bytes) -> FrameResult:
        """Frame one chunk. Big chunks are sliced once, never concatenated."""
        pieces: list[bytes] = []
        start = 0
        if self._partial:  # finish the kept line first: it is short
            first_lf = data.find(b"\n")
            if first_lf < 0:
                self._keep_partial(self._partial + data, pieces)
                return FrameResult(tuple(pieces), False, b"")
            line, self._partial = self._partial + data[: first_lf + 1], b""
            after = self._scan(line, 0, len(line), pieces)
            if after is not None:
                return FrameResult(tuple(pieces), True, line[after:] + data[first_lf + 1 :])
            start = first_lf + 1
        last_lf = data.rfind(b"\n", start)
        if last_lf >= 0:
            after = self._scan(data, start, last_lf + 1, pieces)
            if after is not None:
                return FrameResult(tuple(pieces), True, data[after:])
            start = last_lf + 1
        self._keep_partial(data[start:], pieces)
        return FrameResult(tuple(pieces), False, b"")

    def _scan(self, buf: bytes, start: int, stop: int, pieces: list[bytes]) -> int | None:
        """Frame the complete lines ``buf[start:stop]``; the index after the end line, if any."""
        end, stuffed, bare = scan_lines(buf, self._at_line_start, start, stop)
        if bare:
            self.bare_line_ending = True
        body_stop = stop if end < 0 else end
        if body_stop > start:
            whole = start == 0 and body_stop == len(buf)
            pieces.append(self._unstuff(buf if whole else buf[start:body_stop], stuffed))
        if end >= 0:
            return end + 3
        self._at_line_start = buf.endswith(b"\r\n", start, stop)
        return None

    def _unstuff(self, lines: bytes, stuffed: bool) -> bytes:
        if not stuffed:
            return lines
        if self._at_line_start and lines[:1] == b".":
            lines = lines[1:]
        return lines.replace(b"\r\n.", b"\r\n")

    def _keep_partial(self, partial: bytes, pieces: list[bytes]) -> None:
        """Keep a line without LF; pass on all but its last byte once it is long."""
        if len(partial) <= _MAX_PARTIAL:
            self._partial = partial
            return
        head, self._partial = partial[:-1], partial[-1:]  # the last byte may be a CR
        if b"\r" in head:
            self.bare_line_ending = True
        if self._at_line_start and head.startswith(b"."):
            head = head[1:]
        self._at_line_start = False
        pieces.append(head)


def _scan_lines(
    buf: bytes, at_line_start: bool, start: int = 0, stop: int | None = None
) -> tuple[int, bool, bool]:
    """(end, stuffed, bare) for the complete lines ``buf[start:stop]``: see ``_speedups.c``."""
    stop = len(buf) if stop is None else stop
    if at_line_start and buf.startswith(b".\r\n", start, stop):
        return start, False, False
    idx = buf.find(_END, start, stop)
    end = idx + 2 if idx >= 0 else -1
    body_stop = stop if end < 0 else end
    stuffed = (at_line_start and buf.startswith(b".", start, body_stop)) or (
        buf.find(b"\r\n.", start, body_stop) >= 0
    )
    crlf = buf.count(b"\r\n", start, body_stop)
    bare = buf.count(b"\n", start, body_stop) != crlf or buf.count(b"\r", start, body_stop) != crlf
    return end, stuffed, bare


try:
    from smtpgate.protocol._speedups import scan_lines
except ImportError:  # built without a C compiler: same answers, slower
    scan_lines = _scan_lines
