"""``[server] workers = 2``: two processes on one port share the failed-login windows."""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def _auth(address: tuple[str, int], password: str) -> int:
    with smtplib.SMTP(*address, timeout=10) as smtp:
        smtp.ehlo("workers.test")
        token = base64.b64encode(b"\0alice\0" + password.encode()).decode()
        code, _ = smtp.docmd("AUTH", "PLAIN " + token)
        return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(
        tmp_path, workers=2, extra_toml="ip_failure_limit = 4\nip_failure_window = 300\n"
    )
    proc.start()
    yield proc
    proc.stop()


def test_two_workers_serve_and_share_the_ip_window(serve: ServeProcess) -> None:
    assert serve.proc is not None
    deadline = time.monotonic() + 10
    while len(_children(serve.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_children(serve.proc.pid)) == 2

    # Many short connections: the kernel spreads them over both workers.
    served_by: set[str] = set()
    for _ in range(12):
        assert _auth(serve.address, PASSWORD) == 235
    log = serve.stderr.read_text()
    for line in log.splitlines():
        if "auth ok" in line:
            served_by.add(line.split()[2])  # the process id column of the log format
    assert len(served_by) == 2, "connections did not reach both workers"

    for _ in range(4):  # ip_failure_limit = 4, spread over both workers
        assert _auth(serve.address, "wrong") == 535
    for _ in range(4):  # now blocked in every worker, even with the right password
        assert _auth(serve.address, PASSWORD) == 454
    assert serve.stop() == 0
