"""Every protocol test runs against both DATA scanners: the C speed-up and the pure-Python one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from smtpgate.protocol import framing


@pytest.fixture(autouse=True, params=["c", "python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(framing, "scan_lines", framing._scan_lines)
    elif framing.scan_lines is framing._scan_lines:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the C speed-up is not in use: smtpgate.protocol._speedups not built")
        pytest.skip("the C speed-up is not built")
    yield request.param
