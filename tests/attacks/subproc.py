"""Run ``smtpgate --config FILE serve`` as a real process for the attack tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiosmtplib

from tests.e2e.cluster import SMTPGATE
from tests.e2e.conftest import PASSWORD, free_port

__all__ = ["SMTPGATE", "ServeProcess"]



class ServeProcess:
    def __init__(
        self, root: Path, *, extra_toml: str = "", password: str = PASSWORD, workers: int = 1,
        umask: int = -1,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.data = root / "data"
        self.config = root / "smtpgate.toml"
        self.config.write_text(
            f'data_dir = "{self.data}"\nhostname = "mx.test"\n'
            f"[server]\nworkers = {workers}\n"
            f'[[listener]]\naddress = "127.0.0.1:{self.port}"\ntls = "none"\n'
            "require_auth = true\n"
            "[auth]\nplaintext_requires_tls = false\nfailure_delay = 0.0\n" + extra_toml
        )
        self.stdout = root / "serve.out"
        self.stderr = root / "serve.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "SMTPGATE_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
        self.umask = umask  # -1: inherit ours
        self.cli("user", "add", "alice", "--password-stdin", stdin=password + "\n")

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*SMTPGATE, "--config", str(self.config), *args], input=stdin, text=True,
            capture_output=True, timeout=60, env=self.env, check=False, umask=self.umask,
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self) -> None:
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [*SMTPGATE, "--config", str(self.config), "serve"], stdout=out, stderr=err,
                env=self.env, umask=self.umask,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("smtpgate serve did not start listening within 20 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill_all(self) -> None:
        """SIGKILL the workers and the supervisor at once: a crash, nothing cleaned up."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()] + [self.proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10  # a worker inside a flush dies when the call returns
        while time.monotonic() < deadline and any(_running(pid) for pid in pids):
            time.sleep(0.02)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def workers(self, count: int = 2, timeout: float = 10.0) -> list[int]:
        """The worker process ids, once ``count`` of them run and each has logged that it
        listens (the supervisor's short-lived start-up check is a child too)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            children = [int(p) for p in path.read_text().split()]
            listening = {line.split()[2] for line in self.output().splitlines()
                         if "listening on" in line}
            if len(children) == count and all(str(c) in listening for c in children):
                return children
            time.sleep(0.05)
        raise AssertionError(f"expected {count} workers, have {path.read_text()!r}")

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def logged(self, text: str, timeout: float = 5.0) -> bool:
        """Whether ``text`` is in the output within ``timeout`` seconds: workers write
        their log lines from a thread, in batches, a little after the event."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def pids_logging(self, text: str, count: int, timeout: float = 5.0) -> set[str]:
        """The process ids of the log lines holding ``text``, once ``count`` of them are
        written (or at ``timeout``): workers write their lines in batches, up to ~20 ms
        after they were logged (ops/logs.py)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.stderr.read_text().splitlines() if text in line]
            if len(lines) >= count or time.monotonic() > deadline:
                return {line.split()[2] for line in lines}  # the process id column
            time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has ended: only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def acknowledged_until_killed(serve: ServeProcess, seconds: float,
                                    recipient: Callable[[int], str], body: bytes) -> set[str]:
    """16 clients send ``body`` (client n to ``recipient(n)``) until the whole server is
    SIGKILLed under them after ``seconds``; the queue ids of the acknowledged messages."""
    acked: set[str] = set()

    async def one_client(n: int) -> None:
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=serve.port,
                                       start_tls=False, timeout=30) as client:
                await client.login("alice", PASSWORD)
                for _ in range(10_000):
                    _, reply = await client.sendmail("alice@local.test", [recipient(n)], body)
                    assert "queued as " in reply, reply
                    acked.add(reply.rpartition(" ")[2])
        except (aiosmtplib.SMTPException, OSError):
            return  # the server died under us: what was acknowledged is what counts

    clients = [asyncio.create_task(one_client(n)) for n in range(16)]
    await asyncio.sleep(seconds)
    await asyncio.to_thread(serve.kill_all)
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    return acked
