"""``require_tool``: a missing client skips the test, but fails it under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import require_tool

MISSING = "smtpgate-no-such-client"


def test_present_tool_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "some-client"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_tool("some-client") == str(tool)


def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_tool(MISSING)


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool(MISSING)


def test_missing_debian_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"gsasl is not installed.*make deb-tools"):
        require_tool("gsasl")
