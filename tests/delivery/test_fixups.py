"""HeaderFixups: a missing Date and Message-ID are added first; nothing else changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.delivery.fixups import MAX_HEADER_SECTION, HeaderFixups, field_names

DATE = "Mon, 30 Nov 2026 01:00:00 +0000"
ADDED_DATE = f"Date: {DATE}\r\n".encode()
ADDED_ID = b"Message-ID: <Q1@mx.test>\r\n"


def fix(*chunks: bytes) -> bytes:
    f = HeaderFixups(date=DATE, message_id="<Q1@mx.test>")
    return b"".join(f.feed(chunk) for chunk in chunks) + f.finish()


@pytest.mark.parametrize(
    ("message", "added"),
    [
        (b"Subject: s\r\n\r\nbody\r\n", ADDED_DATE + ADDED_ID),
        (b"Date: x\r\nSubject: s\r\n\r\nbody\r\n", ADDED_ID),
        (b"DATE: x\r\nmessage-id: <a@b>\r\n\r\nbody\r\n", b""),
        (b"Message-Id : <a@b>\r\n\r\nbody\r\n", ADDED_DATE),
        (b"Resent-Date: x\r\nResent-Message-ID: <r@b>\r\n\r\nb\r\n", ADDED_DATE + ADDED_ID),
        (b"Subject: s\r\n Date: folded, not a field\r\n\r\nb\r\n", ADDED_DATE + ADDED_ID),
        (b"\r\nDate: in the body\r\n", ADDED_DATE + ADDED_ID),  # empty header section
        (b"Subject: headers only\r\n", ADDED_DATE + ADDED_ID),  # ends inside the headers
        (b"", ADDED_DATE + ADDED_ID),
    ],
)
def test_missing_fields_are_added_first(message: bytes, added: bytes) -> None:
    assert fix(message) == added + message


def test_body_fields_do_not_count() -> None:
    message = b"Subject: s\r\n\r\nDate: x\r\nMessage-ID: <y@z>\r\n"
    assert fix(message) == ADDED_DATE + ADDED_ID + message


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    message = b"Subject: s\r\nDate: d\r\n\r\nline\r\n\r\nmore\r\n"
    points = sorted({min(c, len(message)) for c in cuts})
    chunks = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    assert fix(*chunks) == ADDED_ID + message


FIELD_LINES = st.sampled_from([
    b"Date: d", b"date : d", b"DATE:d", b" Date: folded", b"Message-ID: <m@x>",
    b"MESSAGE-ID:<m@x>", b"message-id", b"\tMessage-ID: folded", b"Subject: s", b"X-Date: d",
])


@given(st.lists(FIELD_LINES, max_size=6), st.lists(st.integers(min_value=0, max_value=90),
                                                   max_size=4))
def test_what_is_added_follows_field_names(lines: list[bytes], cuts: list[int]) -> None:
    # whole (the first chunk's quick search) and cut anywhere (the held path)
    section = b"".join(line + b"\r\n" for line in lines)
    message = section + b"\r\nbody\r\n"
    present = field_names(section)
    added = ((b"" if b"date" in present else ADDED_DATE)
             + (b"" if b"message-id" in present else ADDED_ID))
    points = sorted({min(c, len(message)) for c in cuts})
    chunks = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    assert fix(message) == added + message
    assert fix(*chunks) == added + message


def test_body_passes_through_without_being_held() -> None:
    f = HeaderFixups(date=DATE, message_id="<Q1@mx.test>")
    assert f.feed(b"Subject: s\r\n") == b""  # header section: held
    assert f.feed(b"\r\nbody") == ADDED_DATE + ADDED_ID + b"Subject: s\r\n\r\nbody"
    assert f.feed(b" more") == b" more"  # body: straight through
    assert f.finish() == b""


def test_an_overlong_header_section_passes_unchanged() -> None:
    big = b"X-Big: " + b"a" * MAX_HEADER_SECTION + b"\r\n"
    f = HeaderFixups(date=DATE, message_id="<Q1@mx.test>")
    out = f.feed(big[:1000]) + f.feed(big[1000:])
    assert out == big  # held no longer than the bound, then released as is
    assert f.feed(b"\r\nbody") == b"\r\nbody" and f.finish() == b""


def test_field_names() -> None:
    assert field_names(b"A: 1\r\n b: folded\r\nno colon\r\nC : 2") == {b"a", b"c"}
