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
    body: bytes  # unstuffed message bytes from this feed (may be empty)
    done: bool  # the end-of-data line was seen
    rest: bytes  # bytes after the end-of-data line (the next commands)


class DataFramer:
    __slots__ = ("_at_line_start", "_partial", "bare_line_ending")

    def __init__(self) -> None:
        self._at_line_start = True  # the 354 reply's CRLF opens the first line
        self._partial = b""
        self.bare_line_ending = False

    def feed(self, data: bytes) -> FrameResult:
        buf = self._partial + data if self._partial else data
        last_lf = buf.rfind(b"\n")
        if last_lf < 0:
            return self._keep_partial(buf)
        lines, partial = buf[: last_lf + 1], buf[last_lf + 1 :]
        end, stuffed, bare = scan_lines(lines, self._at_line_start)
        if bare:
            self.bare_line_ending = True
        if end >= 0:
            body = self._unstuff(lines[:end], stuffed)
            self._partial = b""
            return FrameResult(body, True, lines[end + 3 :] + partial)
        body = self._unstuff(lines, stuffed)
        self._at_line_start = lines.endswith(b"\r\n")
        flushed = self._keep_partial(partial)
        return FrameResult(body + flushed.body if flushed.body else body, False, b"")

    def _unstuff(self, lines: bytes, stuffed: bool) -> bytes:
        if not stuffed:
            return lines
        if self._at_line_start and lines[:1] == b".":
            lines = lines[1:]
        return lines.replace(b"\r\n.", b"\r\n")

    def _keep_partial(self, partial: bytes) -> FrameResult:
        """Keep a line without LF; pass on all but its last byte once it is long."""
        if len(partial) <= _MAX_PARTIAL:
            self._partial = partial
            return FrameResult(b"", False, b"")
        head, self._partial = partial[:-1], partial[-1:]  # the last byte may be a CR
        if b"\r" in head:
            self.bare_line_ending = True
        if self._at_line_start and head.startswith(b"."):
            head = head[1:]
        self._at_line_start = False
        return FrameResult(head, False, b"")


def _scan_lines(lines: bytes, at_line_start: bool) -> tuple[int, bool, bool]:
    """(end, stuffed, bare) for complete lines: see ``_speedups.c``."""
    if at_line_start and lines.startswith(b".\r\n"):
        return 0, False, False
    idx = lines.find(_END)
    end = idx + 2 if idx >= 0 else -1
    body = lines if end < 0 else lines[:end]
    stuffed = (at_line_start and body[:1] == b".") or b"\r\n." in body
    crlf = body.count(b"\r\n")
    return end, stuffed, body.count(b"\n") != crlf or body.count(b"\r") != crlf


try:
    from smtpgate.protocol._speedups import scan_lines
except ImportError:  # built without a C compiler: same answers, slower
    scan_lines = _scan_lines
