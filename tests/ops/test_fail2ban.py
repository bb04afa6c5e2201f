"""contrib/fail2ban: Debian's fail2ban-regex finds exactly the failed logins sent to a
real ``smtpgate serve``, with their client addresses, in the text and the JSON log."""

from __future__ import annotations

import base64
import smtplib
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD
from tests.tools import require_tool

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "filter.d" / "smtpgate.conf"
WRONG = "not the password"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def session(serve: ServeProcess, source: str, *commands: str) -> list[int]:
    """One connection from ``source``: EHLO, then each command; the reply codes."""
    with smtplib.SMTP(*serve.address, timeout=10, source_address=(source, 0)) as smtp:
        smtp.ehlo("f2b.test")
        return [smtp.docmd(command)[0] for command in commands]


def send_events(serve: ServeProcess) -> Counter[str]:
    """Failed logins and other AUTH outcomes; the failures fail2ban must count, by address."""
    for _ in range(3):  # wrong password for a real account, one connection each
        assert session(serve, "127.0.0.2", "AUTH PLAIN " + plain("alice", WRONG)) == [535]
    forged = "x ip=127.0.0.9 outcome=invalid"  # a name that tries to forge the fields
    assert session(serve, "127.0.0.3", "AUTH PLAIN " + plain(forged, WRONG),
                   "AUTH PLAIN " + plain("nobody", WRONG)) == [535, 535]
    # not failed logins: success, unknown mechanism, and (counted) a cancelled exchange
    assert session(serve, "127.0.0.4", "AUTH FOO", "AUTH PLAIN " + plain("alice", PASSWORD)) == [
        504, 235]
    assert session(serve, "127.0.0.5", "AUTH LOGIN", "*") == [334, 501]
    return Counter({"127.0.0.2": 3, "127.0.0.3": 2, "127.0.0.5": 1})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fail2ban_regex_finds_exactly_the_failures_sent(tmp_path: Path, fmt: str) -> None:
    fail2ban_regex = require_tool("fail2ban-regex")
    serve = ServeProcess(tmp_path, extra_toml=(
        "max_failures_per_connection = 10\n"
        f'[log]\nformat = "{fmt}"\n'
    ))
    serve.start()
    try:
        expected = send_events(serve)
    finally:
        assert serve.stop() == 0
    failed = [line for line in serve.stderr.read_text().splitlines() if "auth failed" in line]
    assert len(failed) == 7  # the six failures and the unknown mechanism
    assert all(line.startswith("{") == (fmt == "json") for line in failed)
    done = subprocess.run(
        [fail2ban_regex, "--out", "ip", str(serve.stderr), str(FILTER)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    found = Counter(done.stdout.split())
    assert found == expected, (done.stdout, serve.stderr.read_text()[-3000:])


def test_filter_matches_behind_a_journal_prefix(tmp_path: Path) -> None:
    """Under systemd the journal puts "host unit[pid]: " before smtpgate's own line."""
    fail2ban_regex = require_tool("fail2ban-regex")
    log = tmp_path / "journal.log"
    log.write_text(
        "Nov 30 00:24:04 mx smtpgate[4711]: 2026-11-30 00:24:04,123 4711 INFO smtpgate.auth: "
        "auth failed session=0a1b2c000001 listener=0.0.0.0:587 ip=192.0.2.7 mechanism=PLAIN "
        "reply=535 outcome=invalid user=alice\n"
        'Nov 30 00:24:05 mx smtpgate[4711]: {"time": "2026-11-30T00:24:05.123+00:00", '
        '"level": "INFO", "logger": "smtpgate.auth", "pid": 4711, "message": "auth failed", '
        '"session": "0a1b2c000002", "listener": "0.0.0.0:587", "ip": "192.0.2.8", '
        '"mechanism": "LOGIN", "reply": 421, "outcome": "invalid"}\n'
        "Nov 30 00:24:06 mx smtpgate[4711]: 2026-11-30 00:24:06,123 4711 INFO smtpgate.auth: "
        "auth failed session=0a1b2c000003 listener=0.0.0.0:587 ip=192.0.2.9 mechanism=PLAIN "
        "reply=454 outcome=blocked user=alice\n"
    )
    done = subprocess.run([fail2ban_regex, "--out", "ip", str(log), str(FILTER)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["192.0.2.7", "192.0.2.8"]  # not the blocked one
