"""Every protocol test runs against both DATA scanners: the C speed-up and the pure-Python one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtpgate.protocol import framing


@pytest.fixture(autouse=True, params=["c", "python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(framing, "scan_lines", framing._scan_lines)
    elif framing.scan_lines is framing._scan_lines:
        pytest.skip("the C speed-up is not built (tests/protocol/test_speedups.py says why)")
    yield request.param
