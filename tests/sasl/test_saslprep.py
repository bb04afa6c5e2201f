"""SASLprep against RFC 4013 section 3 and the rules of section 2."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.sasl.saslprep import SaslPrepError, saslprep


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("I\u00adX", "IX"),  # 1: SOFT HYPHEN mapped to nothing
        ("user", "user"),  # 2: no transformation
        ("USER", "USER"),  # 3: case preserved
        ("\u00aa", "a"),  # 4: output is NFKC
        ("\u2168", "IX"),  # 5: output is NFKC, matches #1
    ],
)
def test_rfc4013_section3_examples(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "\u0007",  # 6: prohibited character
        "\u0627\u0031",  # 7: bidirectional check
    ],
)
def test_rfc4013_section3_errors(bad: str) -> None:
    with pytest.raises(SaslPrepError):
        saslprep(bad)


def test_non_ascii_space_maps_to_space() -> None:
    assert saslprep("a\u00a0b\u3000c") == "a b c"


def test_zero_width_mapped_to_nothing() -> None:
    assert saslprep("pa\u200bss\ufeff") == "pass"


def test_empty_string_is_empty() -> None:
    assert saslprep("") == ""


@pytest.mark.parametrize(
    "bad",
    [
        "a\u0000b",  # C.2.1 ASCII control
        "a\x7fb",  # C.2.1 DEL
        "a\u0085b",  # C.2.2 non-ASCII control
        "a\ue000b",  # C.3 private use
        "a\ufffeb",  # C.4 non-character
        "a\ufff9b",  # C.6 inappropriate for plain text
        "a\u2ff0b",  # C.7 ideographic description
        "a\u200eb",  # C.8 LRM
        "a\U000e0001b",  # C.9 tagging
    ],
)
def test_prohibited_output(bad: str) -> None:
    with pytest.raises(SaslPrepError):
        saslprep(bad)


def test_surrogate_prohibited() -> None:
    with pytest.raises(SaslPrepError):
        saslprep("a\ud800b")


def test_unassigned_only_in_queries() -> None:
    unassigned = "\u0221"  # unassigned in Unicode 3.2 (RFC 3454 table A.1)
    with pytest.raises(SaslPrepError):
        saslprep("a" + unassigned)
    assert saslprep("a" + unassigned, allow_unassigned=True) == "a" + unassigned


def test_bidi_rules() -> None:
    assert saslprep("\u0627\u0628") == "\u0627\u0628"  # all RandALCat
    assert saslprep("\u0627 1 \u0628") == "\u0627 1 \u0628"  # neutral inside
    with pytest.raises(SaslPrepError):
        saslprep("\u0627a\u0628")  # LCat mixed in
    with pytest.raises(SaslPrepError):
        saslprep("1\u0627")  # does not start with RandALCat


def test_error_text_does_not_contain_input() -> None:
    with pytest.raises(SaslPrepError) as info:
        saslprep("secret\u0007")
    assert "secret" not in str(info.value)


@given(st.text())
def test_never_raises_anything_but_saslprep_error(s: str) -> None:
    try:
        out = saslprep(s)
    except SaslPrepError:
        return
    assert saslprep(out) == out  # idempotent on its own output
