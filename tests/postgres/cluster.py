"""A throw-away PostgreSQL cluster for the tests: Debian's binaries, a temp dir, loopback.

``PgCluster`` runs ``initdb`` in a fresh temporary directory (password
authentication, SCRAM; a superuser ``smtpgate`` with a random password),
then ``pg_ctl start`` with the server on 127.0.0.1 only, no Unix socket, and
durability off (fsync, synchronous_commit: a test cluster never survives a
crash anyway). initdb refuses to run as root, so under root (``make test`` in
CI) every server command runs as ``nobody``, who owns the directory.

``database()`` creates a fresh, empty database per test and returns its URL;
``stop()``/``start()`` let a test take the server away and bring it back on
the same port. ``postgres_bin`` finds the binaries (``/usr/lib/postgresql/N/
bin``, newest N): missing, the test is skipped, or fails under CI=true
(``tests/tools.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.e2e.conftest import free_port
from tests.tools import require

START_TIMEOUT = 60  # seconds, pg_ctl -t
UNPRIVILEGED = "nobody"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian package postgresql)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    require(bool(found), "PostgreSQL is not installed (Debian package postgresql)")
    return found[-1].parent


class PgCluster:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="smtpgate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self._names = itertools.count()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = UNPRIVILEGED
            entry = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    # -- lifecycle ------------------------------------------------------------
    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        self._run("initdb", "-D", str(self.data), "-U", "smtpgate", "-E", "UTF8",
                  "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}")
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data),
                  "-l", str(self.log), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data),
                  "-m", mode)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ------------------------------------------------------------
    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://smtpgate:{secret}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    # -- helpers --------------------------------------------------------------
    def _own(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / tool), *args], check=False, user=self._user, cwd=self.root,
            capture_output=True, text=True, timeout=START_TIMEOUT + 30,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, tool, done.stdout, f"{done.stderr}\n{log}"
            )
