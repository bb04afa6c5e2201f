"""Device accounts against a real ``smtpgate serve`` process, managed by the real CLI.

One server per module (``[auth] enforce_sender = true``); each test makes its
own devices with ``smtpgate device ...`` while the server runs, so every change
is seen by the running server at the next AUTH. Clients bind to other loopback
addresses (127.0.0.2, 127.0.0.3) to come from inside or outside a device's
``--network``. The two-worker test runs its own server.
"""

from __future__ import annotations

import base64
import smtplib
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD
from tests.tools import require_tool

INSIDE, OUTSIDE = "127.0.0.2", "127.0.0.3"
TOML = (
    "enforce_sender = true\nmax_failures_per_connection = 2\n"
    "ip_failure_limit = 10000\nuser_failure_limit = 10000\n"
)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = ServeProcess(tmp_path_factory.mktemp("devices"), extra_toml=TOML)
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.output()


def device(serve: ServeProcess, name: str, *args: str) -> str:
    """``smtpgate device add NAME ARGS``: the password, from the last line of stdout."""
    out = serve.cli("device", "add", name, *args).stdout
    return out.splitlines()[-1]


def client(serve: ServeProcess, local: str = INSIDE) -> smtplib.SMTP:
    smtp = smtplib.SMTP(*serve.address, source_address=(local, 0), timeout=15)
    smtp.ehlo("device.test")
    return smtp


def auth(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, str]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, text = smtp.docmd("AUTH", "PLAIN " + token)
    return code, text.decode()


def login(serve: ServeProcess, user: str, password: str, local: str = INSIDE) -> tuple[int, str]:
    with client(serve, local) as smtp:
        return auth(smtp, user, password)


def mail_from(smtp: smtplib.SMTP, sender: str) -> tuple[int, str]:
    code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
    smtp.rset()
    return code, text.decode()


def send(smtp: smtplib.SMTP, sender: str) -> tuple[int, str]:
    """One whole message; the first refusal (MAIL, RCPT or DATA) or the final reply."""
    code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
    if code != 250:
        return code, text.decode()
    code, text = smtp.docmd("RCPT", "TO:<office@example.org>")
    assert code == 250, text
    code, text = smtp.data(b"Subject: scan\r\n\r\nscanned page\r\n")
    return code, text.decode()


REFUSED = (535, "5.7.8 Authentication credentials invalid")


def test_device_from_inside_and_outside_its_network(serve: ServeProcess) -> None:
    password = device(serve, "net-copier", "--sender", "scan@example.org",
                      "--network", "127.0.0.2/32")
    assert login(serve, "net-copier", password, INSIDE)[0] == 235
    assert login(serve, "net-copier", password, OUTSIDE) == REFUSED
    assert login(serve, "net-copier", "wrong", INSIDE) == REFUSED  # the very same reply


def test_refused_device_login_is_a_counted_failure(serve: ServeProcess) -> None:
    password = device(serve, "counted", "--sender", "scan@example.org",
                      "--network", "127.0.0.2/32")
    with client(serve, OUTSIDE) as smtp:
        assert auth(smtp, "counted", password) == REFUSED
        code, text = auth(smtp, "counted", password)  # max_failures_per_connection = 2
    assert (code, text.split()[0]) == (421, "4.7.0")


def test_device_senders(serve: ServeProcess) -> None:
    password = device(serve, "senders", "--sender", "scan@example.org",
                      "--sender", "*@branch.example.org")
    with client(serve) as smtp:
        assert auth(smtp, "senders", password)[0] == 235
        assert mail_from(smtp, "scan@example.org")[0] == 250
        assert mail_from(smtp, "SCAN@Example.ORG")[0] == 250
        assert mail_from(smtp, "anyone@branch.example.org")[0] == 250
        for other in ("boss@example.org", "scan@example.net", "x@sub.branch.example.org", ""):
            assert mail_from(smtp, other) == (
                553, "5.7.1 Sender address not allowed for this account"
            ), other
        assert send(smtp, "scan@example.org")[0] == 250


def test_person_senders_when_enforced(serve: ServeProcess) -> None:
    serve.cli("user", "add", "bob", "--password-stdin", "--address", "bob@example.org",
              stdin=PASSWORD + "\n")
    serve.cli("user", "add", "carol@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with client(serve) as smtp:
        assert auth(smtp, "bob", PASSWORD)[0] == 235
        assert mail_from(smtp, "bob@example.org")[0] == 250
        assert mail_from(smtp, "carol@example.org")[0] == 553
    with client(serve) as smtp:
        assert auth(smtp, "carol@example.org", PASSWORD)[0] == 235
        assert mail_from(smtp, "carol@example.org")[0] == 250
        assert mail_from(smtp, "bob@example.org")[0] == 553


def test_device_past_its_daily_quota(serve: ServeProcess) -> None:
    password = device(serve, "quota", "--sender", "scan@example.org", "--max-per-day", "2")
    with client(serve) as smtp:
        assert auth(smtp, "quota", password)[0] == 235
        assert mail_from(smtp, "boss@example.org")[0] == 553  # refused: not counted
        assert send(smtp, "scan@example.org")[0] == 250
        assert send(smtp, "scan@example.org")[0] == 250
        code, text = smtp.docmd("MAIL", "FROM:<scan@example.org>")
    assert (code, text.decode().split()[0]) == (451, "4.7.1")
    db = serve.data / "quota.db"
    assert db.stat().st_mode & 0o777 == 0o600
    today = datetime.now(UTC).date().isoformat()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT day, n FROM counts WHERE account = 'quota'").fetchall() == [
            (today, 2)
        ]


def test_expired_device(serve: ServeProcess) -> None:
    today = datetime.now(UTC).date()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    old = device(serve, "expired", "--sender", "s@example.org", "--expires", yesterday.isoformat())
    assert login(serve, "expired", old) == REFUSED
    for name, day in (("last-day", today), ("valid", tomorrow)):
        password = device(serve, name, "--sender", "s@example.org", "--expires", day.isoformat())
        assert login(serve, name, password)[0] == 235
    assert "state=expired" in serve.cli("device", "list").stdout


def test_disabled_device_is_refused_even_when_cached(serve: ServeProcess) -> None:
    password = device(serve, "switch", "--sender", "s@example.org")
    assert login(serve, "switch", password)[0] == 235  # now in the verified-credentials cache
    serve.cli("device", "disable", "switch")
    assert login(serve, "switch", password) == REFUSED
    serve.cli("device", "enable", "switch")
    assert login(serve, "switch", password)[0] == 235


def test_rotated_and_revoked_device(serve: ServeProcess) -> None:
    old = device(serve, "rotor", "--sender", "s@example.org")
    assert login(serve, "rotor", old)[0] == 235
    out = serve.cli("device", "rotate", "rotor").stdout
    new = out.splitlines()[-1]
    assert new != old
    assert login(serve, "rotor", old) == REFUSED
    assert login(serve, "rotor", new)[0] == 235
    serve.cli("device", "revoke", "rotor")
    assert login(serve, "rotor", new) == REFUSED


def test_swaks_as_the_device(serve: ServeProcess) -> None:
    swaks = require_tool("swaks")
    password = device(serve, "swaks-copier", "--sender", "scan@example.org",
                      "--network", "127.0.0.2/32", "--mechanisms", "PLAIN,LOGIN")

    def run(local: str, sender: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [swaks, "--server", serve.address[0], "--port", str(serve.address[1]),
             "--local-interface", local, "--helo", "copier.test", "--auth", "LOGIN",
             "--auth-user", "swaks-copier", "--auth-password", password,
             "--from", sender, "--to", "office@example.org", "--timeout", "15"],
            capture_output=True, text=True, timeout=60, check=False,
        )

    sent = run(INSIDE, "scan@example.org")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "<-  250 2.0.0 Ok: queued as" in sent.stdout
    refused_sender = run(INSIDE, "ceo@example.org")
    assert "<** 553 5.7.1 Sender address not allowed" in refused_sender.stdout
    outside = run(OUTSIDE, "scan@example.org")
    assert "<** 535 5.7.8" in outside.stdout
    mail = list((serve.data / "mail" / "office@example.org" / "new").iterdir())
    assert any(b"X-Mailer: swaks" in path.read_bytes() for path in mail)


def test_two_workers_share_one_device_quota(tmp_path: Path) -> None:
    proc = ServeProcess(tmp_path, workers=2, extra_toml=TOML)
    password = device(proc, "shared", "--sender", "scan@example.org", "--max-per-day", "5")
    proc.start()
    try:
        pids = set(proc.workers(2))
        codes: list[int] = []
        for _ in range(12):  # new connections: the kernel spreads them over both workers
            with client(proc) as smtp:
                assert auth(smtp, "shared", password)[0] == 235
                codes.append(send(smtp, "scan@example.org")[0])
        assert codes.count(250) == 5, codes
        assert codes.count(451) == 7, codes
        served_by = proc.pids_logging("auth ok", 12)
        assert served_by == {str(pid) for pid in pids}, "connections did not reach both workers"
    finally:
        assert proc.stop() == 0, proc.output()
