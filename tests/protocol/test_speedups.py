"""The C DATA scanner gives exactly the answers of the pure-Python one."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpgate.protocol import framing

try:
    from smtpgate.protocol import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None  # type: ignore[assignment]


def test_speedups_are_built_in_ci() -> None:
    # gcc is on every machine we ship to; a silent fallback would hide a slow build.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        assert _speedups is not None, "smtpgate.protocol._speedups was not built"


lines_strategy = st.lists(
    st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\x00", b"..", b".\r\n"]),
             max_size=12).map(b"".join),
    min_size=1, max_size=12,
).map(lambda parts: b"".join(parts) + b"\n")


@pytest.mark.skipif(_speedups is None, reason="C speed-up not built")
@settings(max_examples=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy, at_line_start=st.booleans())
def test_c_and_python_scanners_agree(lines: bytes, at_line_start: bool, scanner: str) -> None:
    assert _speedups is not None
    assert _speedups.scan_lines(lines, at_line_start) == framing._scan_lines(lines, at_line_start)


@pytest.mark.parametrize(
    ("lines", "start", "expected"),
    [
        (b"abc\r\n.\r\nMAIL\r\n", True, (5, False, False)),
        (b".\r\n", True, (0, False, False)),
        (b".\r\n", False, (-1, False, False)),  # mid-line: neither an end nor stuffing
        (b"a\n.\r\n", True, (-1, False, True)),  # after a bare LF a "." line ends nothing
        (b"..x\r\n", True, (-1, True, False)),
        (b"a\rb\r\n", True, (-1, False, True)),
        (b"a\r\x00\n", True, (-1, False, True)),
    ],
)
def test_scanner_examples(lines: bytes, start: bool, expected: tuple[int, bool, bool],
                          scanner: str) -> None:
    assert framing.scan_lines(lines, start) == expected


@pytest.mark.skipif(_speedups is None, reason="C speed-up not built")
@settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=lines_strategy,
    before=st.binary(max_size=6),
    after=st.binary(max_size=6),
    at_line_start=st.booleans(),
)
def test_scanners_agree_on_a_window_of_a_larger_buffer(
    lines: bytes, before: bytes, after: bytes, at_line_start: bool, scanner: str
) -> None:
    assert _speedups is not None
    buf, start, stop = before + lines + after, len(before), len(before) + len(lines)
    c_answer = _speedups.scan_lines(buf, at_line_start, start, stop)
    assert c_answer == framing._scan_lines(buf, at_line_start, start, stop)
    end = c_answer[0]
    assert end == -1 or start <= end < stop  # indexes are into the whole buffer
