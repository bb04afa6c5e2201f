"""contrib/systemd/smtpgate.service: systemd's own tools accept and rate the unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.tools import require_tool

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "smtpgate.service"
INSTALLED = "/usr/local/bin/smtpgate"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) .. 10 (unprotected)


def settings() -> dict[str, list[str]]:
    """Each key of the unit with its values, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_for_this_venv(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's smtpgate (verify wants it to exist)."""
    binary = Path(sys.executable).parent / "smtpgate"
    if not binary.exists():
        found = shutil.which("smtpgate")
        assert found is not None, "smtpgate is not installed in this environment"
        binary = Path(found)
    text = UNIT.read_text()
    assert INSTALLED in text
    path = tmp_path / "smtpgate.service"
    path.write_text(text.replace(INSTALLED, str(binary)))
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    done = subprocess.run([analyze, "verify", "--man=no", str(unit_for_this_venv(tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "smtpgate.service" not in done.stderr, done.stderr  # no warning about our unit


def test_systemd_analyze_security_rates_the_unit_locked_down(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit_for_this_venv(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for smtpgate\.service: ([\d.]+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


def test_the_unit_has_the_hardening_the_issue_asks_for() -> None:
    s = settings()
    assert s["User"] == ["smtpgate"] and s["Group"] == ["smtpgate"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/smtpgate"] == [s["WorkingDirectory"][0]]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"][0].endswith(" serve")
