"""SIGHUP: a real two-worker ``smtpgate serve`` serves a new TLS pair to new connections,
keeps open ones on theirs, refuses a broken pair, and names keys that need a restart."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from smtpgate.server.certs import ensure_self_signed
from tests.e2e.cluster import SMTPGATE
from tests.e2e.conftest import free_port

TIMEOUT = 15.0


class TlsServe:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data = root / "data"
        self.config = root / "smtpgate.toml"
        self.stderr = root / "serve.err"
        self.write_config(max_recipients=100)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, *, max_recipients: int) -> None:
        self.config.write_text(
            f'data_dir = "{self.data}"\nhostname = "mx.test"\n[server]\nworkers = 2\n'
            f'[[listener]]\naddress = "127.0.0.1:{self.port}"\ntls = "implicit"\n'
            f"[limits]\nmax_recipients = {max_recipients}\n"
        )

    def start(self) -> None:
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen([*SMTPGATE, "--config", str(self.config), "serve"],
                                         stderr=err, env={**os.environ, "CI": ""})
        wait_for(lambda: len(self.workers()) == 2 and self.lines("listening on") == 2)

    def workers(self) -> list[int]:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def lines(self, text: str) -> int:
        return sum(text in line for line in self.log().splitlines())

    def pids_logging(self, text: str) -> set[int]:
        return {int(line.split()[2]) for line in self.log().splitlines() if text in line}

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_for(check: object, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int) -> ssl.SSLSocket:
    """A TLS client on the implicit-TLS port, greeted."""
    sock = client().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    assert sock.recv(512).startswith(b"220")
    return sock


def served_cert(port: int) -> bytes:
    with connect(port) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def new_pair(root: Path, name: str) -> tuple[Path, Path]:
    folder = root / name
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    assert ensure_self_signed(cert, key, f"{name}.test")
    return cert, key


def install(cert: Path, key: Path, data: Path) -> None:
    os.replace(key, data / "tls" / "key.pem")
    os.replace(cert, data / "tls" / "cert.pem")


def test_sighup_reloads_the_tls_pair_in_every_worker(tmp_path: Path) -> None:
    serve = TlsServe(tmp_path)
    serve.start()
    try:
        workers = set(serve.workers())
        first = served_cert(serve.port)
        old_session = connect(serve.port)
        assert old_session.getpeercert(binary_form=True) == first

        cert, key = new_pair(tmp_path, "second")
        second_pem = cert.read_bytes()
        install(cert, key, serve.data)
        serve.hup()
        wait_for(lambda: serve.pids_logging("reloaded: TLS") == workers)
        second = ssl.PEM_cert_to_DER_cert(second_pem.decode())
        assert second != first
        # Several new connections: SO_REUSEPORT spreads them over both workers.
        assert {served_cert(serve.port) for _ in range(8)} == {second}
        old_session.sendall(b"NOOP\r\n")  # the open session goes on, on its own pair
        assert old_session.recv(512).startswith(b"250")
        old_session.close()

        # A broken pair (the key of another certificate) and a key that needs a restart.
        _, third_key = new_pair(tmp_path, "third")
        os.replace(third_key, serve.data / "tls" / "key.pem")
        serve.write_config(max_recipients=5)
        serve.hup()
        wait_for(lambda: serve.pids_logging("TLS pair refused") == workers)
        assert serve.lines("changed keys need a restart: limits.max_recipients") == 3
        assert {served_cert(serve.port) for _ in range(4)} == {second}
        assert set(serve.workers()) == workers  # nobody restarted
    finally:
        assert serve.stop() == 0, serve.log()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text()
