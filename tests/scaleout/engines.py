"""Real engines for the scale-out tests: Debian's redis-server and haproxy.

Each runs as a child process on a loopback port with its files in a temporary
folder, and is stopped by the test session that started it. ``Instance`` is
one ``smtpgate serve`` process (``tests/e2e/cluster.py``'s ``Cluster`` with
one worker) that a test may SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.e2e.cluster import Cluster
from tests.e2e.conftest import free_port
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "contrib" / "haproxy" / "haproxy.cfg"
START_TIMEOUT = 20.0


def wait_until(condition: object, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class RedisServer:
    """redis-server on 127.0.0.1, no persistence: a restart forgets everything."""

    def __init__(self, folder: Path) -> None:
        self.binary = require_tool("redis-server")
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                str(self.folder), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--maxclients", "500"]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.answers, "redis-server answers PING")

    def answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2.0)

    def stop(self) -> None:
        stop_process(self.proc)


class HAProxy:
    """haproxy -db running contrib/haproxy/haproxy.cfg in front of two listeners."""

    def __init__(self, folder: Path, backends: tuple[int, int]) -> None:
        self.binary = require_tool("haproxy")
        self.folder = folder
        self.port = free_port()
        self.env = {**os.environ, "SMTPGATE_FRONTEND": f"127.0.0.1:{self.port}",
                    "SMTPGATE_A": f"127.0.0.1:{backends[0]}",
                    "SMTPGATE_B": f"127.0.0.1:{backends[1]}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "haproxy.log").open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-db", "-f", str(HAPROXY_CFG)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_until(lambda: accepts(self.port), "haproxy listens")

    def stop(self) -> None:
        stop_process(self.proc)


class Instance(Cluster):
    """One ``smtpgate serve`` process (workers = 1)."""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
