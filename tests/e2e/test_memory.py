"""Lean processes (docs/performance.md): resident memory of a real ``smtpgate serve``, and
the optional subsystems it must not import unless configured.

The server runs as in production: the default ``[server] workers`` (one worker per
core, so a supervisor and several workers), Maildir delivery, a STARTTLS and an
implicit-TLS listener, no admin listener (so no metrics), no relay, no Redis, the
SQLite store. Resident size is ``VmRSS`` of ``/proc/PID/status``: it counts shared
pages (the interpreter, libraries, what the supervisor had before the fork) in every
process, which is what the goals are stated in.

Which modules a server imports is read from ``python -X importtime``: every process
of the tree (supervisor, the child that runs the start-up checks, the workers) writes
a line to standard error for each module it imports, so a module missing from those
lines was imported by none of them.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.cluster import SMTPGATE
from tests.e2e.conftest import free_port

WORKER_BUDGET_KIB = 30 * 1024
SUPERVISOR_BUDGET_KIB = 20 * 1024
# Imported only where configured (docs/performance.md, "Lean processes").
OPTIONAL = ("aiohttp", "jinja2", "prometheus_client", "redis", "httpx", "aiosmtplib", "psycopg")
WORKERS = os.cpu_count() or 1

pytestmark = pytest.mark.skipif(WORKERS < 2, reason="the default workers setting is 1 here")


class Serve:
    """``smtpgate serve`` on a config file; ``extra`` is appended to the TOML."""

    def __init__(self, root: Path, extra: str = "", python_flags: tuple[str, ...] = ()) -> None:
        self.starttls, self.implicit = free_port(), free_port()
        self.config = root / "smtpgate.toml"
        self.config.write_text(
            f'data_dir = "{root / "data"}"\nhostname = "mx.test"\n'
            f'[[listener]]\naddress = "127.0.0.1:{self.starttls}"\ntls = "starttls"\n'
            f'[[listener]]\naddress = "127.0.0.1:{self.implicit}"\ntls = "implicit"\n'
            + extra
        )
        self.err = root / "serve.err"
        command = [sys.executable, *python_flags, *SMTPGATE[1:]]
        env = {**os.environ, "SMTPGATE_LOG_LEVEL": "INFO"}
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen([*command, "--config", str(self.config), "serve"],
                                         stderr=err, env=env)

    def output(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_ready(self, workers: int, timeout: float = 30.0) -> None:
        """Until every worker listens on both ports and one answers a greeting."""
        deadline = time.monotonic() + timeout
        while self.output().count("listening on") < 2 * workers:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", self.starttls), timeout=10) as sock:
            assert sock.recv(512).startswith(b"220 ")
        time.sleep(1.0)  # let the workers settle after the greeting

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextmanager
def serving(root: Path, extra: str = "", python_flags: tuple[str, ...] = ()) -> Iterator[Serve]:
    serve = Serve(root, extra, python_flags)
    try:
        serve.wait_ready(WORKERS)
        yield serve
    finally:
        assert serve.stop() == 0, serve.output()


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def imported(stderr: str) -> set[str]:
    """The top-level names of the modules ``-X importtime`` reported, in any process."""
    names: set[str] = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


def starttls_session(port: int) -> None:
    """One client that starts TLS (the worker then loads pyOpenSSL) and leaves."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo()


def test_supervisor_and_workers_stay_within_their_budgets(tmp_path: Path) -> None:
    with serving(tmp_path) as serve:
        workers = serve.workers()
        assert len(workers) == WORKERS
        supervisor = vm_rss_kib(serve.proc.pid)
        at_rest = {pid: vm_rss_kib(pid) for pid in workers}
        figures = (f"supervisor {mib(supervisor)}; workers at rest "
                   + ", ".join(mib(kib) for kib in at_rest.values()))
        print(f"\nVmRSS of smtpgate serve, {WORKERS} workers: {figures}")
        for _ in range(2 * WORKERS):  # most likely every worker gets one
            starttls_session(serve.starttls)
        time.sleep(0.3)
        after = ", ".join(mib(vm_rss_kib(pid)) for pid in workers)
        print(f"VmRSS of the workers after {2 * WORKERS} STARTTLS sessions: {after}")
    assert supervisor <= SUPERVISOR_BUDGET_KIB, figures
    assert max(at_rest.values()) <= WORKER_BUDGET_KIB, figures


def test_unconfigured_subsystems_are_not_imported(tmp_path: Path) -> None:
    with serving(tmp_path, python_flags=("-X", "importtime")) as serve:
        starttls_session(serve.starttls)  # TLS and an EHLO in a worker too
        time.sleep(0.3)
    names = imported(serve.output())
    assert {"smtpgate", "asyncio", "OpenSSL"} <= names  # the lines are there to be read
    assert [name for name in OPTIONAL if name in names] == []


def test_the_admin_listener_brings_its_modules(tmp_path: Path) -> None:
    """The control: configured, the admin page and metrics are imported (the page by
    worker 0, prometheus-client by every worker, neither by the supervisor)."""
    admin = f'[admin]\naddress = "127.0.0.1:{free_port()}"\n'
    with serving(tmp_path, admin, python_flags=("-X", "importtime")) as serve:
        assert serve.workers()
        supervisor = vm_rss_kib(serve.proc.pid)  # metrics on: still nothing of them here
    assert supervisor <= SUPERVISOR_BUDGET_KIB, mib(supervisor)
    names = imported(serve.output())
    assert {"aiohttp", "jinja2", "prometheus_client"} <= names
    assert not {"redis", "httpx", "aiosmtplib", "psycopg"} & names
