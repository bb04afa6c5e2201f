"""Submission fix-ups (RFC 6409 section 8.3 and 8.4): add a missing Date and Message-ID.

Theory of operation
-------------------
A message submitted without ``Date`` or ``Message-ID`` (old copiers and
scripts) gets them, placed right after our Received header, before the
client's first header line; nothing else in the message changes. Many
receiving providers refuse mail without a Message-ID.

To know whether the fields are there, ``HeaderFixups`` holds back the
message's *header section* only: the octets up to and including the first
empty line (``CRLF CRLF``, RFC 5322 section 2.1). Body octets pass straight
through. The hold is bounded by ``MAX_HEADER_SECTION``: a header section
longer than that is passed on unchanged (such a message is not from a device
that forgets its Date). A message that ends inside its header section (no
body) is fixed at ``finish``. Header names are matched case-insensitively,
on field lines only (not folded continuation lines, RFC 5322 section 2.2.3).

Pure: no I/O; the host writes what ``feed`` and ``finish`` return, in order.
"""

from __future__ import annotations

MAX_HEADER_SECTION = 128 * 1024
_END = b"\r\n\r\n"


class HeaderFixups:
    """Feed the message's octets in order; write what comes back."""

    __slots__ = ("_added", "_held", "_passing")

    def __init__(self, *, date: str, message_id: str) -> None:
        self._added = (f"Date: {date}\r\n".encode("ascii"),
                       f"Message-ID: {message_id}\r\n".encode("ascii"))
        self._held = bytearray()
        self._passing = False  # the header section is behind us (or too long)

    def feed(self, data: bytes) -> bytes:
        if self._passing:
            return data
        if not self._held:  # usually the whole header section is in the first chunk
            if data.startswith(b"\r\n"):
                return self._fix(data, 0)
            end = data.find(_END)
            if end >= 0:
                return self._fix(data, end + 2)
        start = max(0, len(self._held) - 3)  # the end may straddle two chunks
        self._held += data
        held = self._held
        if held.startswith(b"\r\n"):  # an empty header section
            return self._release(0)
        end = held.find(_END, start)
        if end >= 0:
            return self._release(end + 2)
        if len(held) > MAX_HEADER_SECTION:
            self._passing = True
            out, self._held = bytes(held), bytearray()
            return out
        return b""

    def finish(self) -> bytes:
        """The end of the message: whatever is still held, fixed if it is all headers."""
        if self._passing:
            return b""
        return self._release(len(self._held))

    def _release(self, header_end: int) -> bytes:
        """Emit the missing fields, then everything held; ``header_end``: where the
        header section's field lines stop."""
        held, self._held = bytes(self._held), bytearray()
        return self._fix(held, header_end)

    def _fix(self, held: bytes, header_end: int) -> bytes:
        self._passing = True
        section = held[:header_end]
        lowered = b"\r\n" + section.lower()
        if b"\r\ndate:" in lowered and b"\r\nmessage-id:" in lowered:
            return held  # both, as almost every client writes them (field_names agrees)
        present = field_names(section)
        date, message_id = self._added
        missing = b""
        if b"date" not in present:
            missing += date
        if b"message-id" not in present:
            missing += message_id
        return missing + held


def field_names(section: bytes) -> frozenset[bytes]:
    """The lower-cased names of the header fields in ``section`` (CRLF-separated)."""
    names = set()
    for line in section.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue  # a folded continuation, or not a field
        names.add(line.split(b":", 1)[0].strip().lower())
    return frozenset(names)
