"""SASLprep (RFC 4013): the stringprep profile for user names and passwords.

Theory of operation
-------------------
RFC 4013 section 2 runs four steps over the string, all against the
Unicode 3.2 tables of RFC 3454 (the stdlib ``stringprep`` module and
``unicodedata.ucd_3_2_0``):

1. Map (section 2.1): non-ASCII spaces (C.1.2) become U+0020 SPACE and the
   "commonly mapped to nothing" characters (B.1) are removed.
2. Normalize (section 2.2): Unicode normalization form KC.
3. Prohibit (section 2.3): the tables C.1.2, C.2.1, C.2.2, C.3, C.4, C.5,
   C.6, C.7, C.8 and C.9 must not occur in the output.
4. Bidi (section 2.4, RFC 3454 section 6): a string with any RandALCat
   character has no LCat character and starts and ends with RandALCat.

Unassigned code points (A.1) are prohibited in "stored strings" and allowed
in "queries" (RFC 4013 section 2.5, RFC 3454 section 7); ``allow_unassigned``
picks the latter. Error messages never quote the input: it may be a password.
"""

from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable

__all__ = ["SaslPrepError", "saslprep"]

_UCD = unicodedata.ucd_3_2_0

# RFC 4013 section 2.3: the prohibited output tables.
_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,  # non-ASCII space characters
    stringprep.in_table_c21,  # ASCII control characters
    stringprep.in_table_c22,  # non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate codes
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties / deprecated
    stringprep.in_table_c9,  # tagging characters
)


class SaslPrepError(ValueError):
    """The string cannot be prepared (prohibited output, bidi rule, unassigned)."""


def _map(s: str) -> str:
    """RFC 4013 section 2.1: B.1 -> nothing, C.1.2 -> SPACE.

    U+200B ZERO WIDTH SPACE is in both tables; like libidn and passlib we
    remove it (B.1 first), which is what a user who pasted it expects.
    """
    out: list[str] = []
    for ch in s:
        if stringprep.in_table_b1(ch):
            continue
        out.append(" " if stringprep.in_table_c12(ch) else ch)
    return "".join(out)


def _check_prohibited(s: str, allow_unassigned: bool) -> None:
    """RFC 4013 sections 2.3 and 2.5."""
    for ch in s:
        if any(table(ch) for table in _PROHIBITED):
            raise SaslPrepError("prohibited character in output")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SaslPrepError("unassigned code point")


def _check_bidi(s: str) -> None:
    """RFC 4013 section 2.4, using RFC 3454 section 6."""
    if not any(stringprep.in_table_d1(ch) for ch in s):
        return
    if any(stringprep.in_table_d2(ch) for ch in s):
        raise SaslPrepError("bidi: RandALCat and LCat mixed")
    if not (stringprep.in_table_d1(s[0]) and stringprep.in_table_d1(s[-1])):
        raise SaslPrepError("bidi: RandALCat string must start and end with RandALCat")


def saslprep(s: str, *, allow_unassigned: bool = False) -> str:
    """Prepare ``s`` per RFC 4013; raise SaslPrepError if it is not allowed."""
    if s.isascii() and s.isprintable():
        return s  # printable ASCII (0x20-0x7E) passes every step unchanged
    prepared = _UCD.normalize("NFKC", _map(s))  # sections 2.1, 2.2
    _check_prohibited(prepared, allow_unassigned)
    _check_bidi(prepared)
    return prepared
