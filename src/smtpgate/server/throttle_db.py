"""A ThrottleState shared by worker processes, in a small SQLite file.

With ``[server] workers > 1`` every worker must see the same failure windows,
or an attacker gets ``workers`` times the allowance. The windows live in
``<data_dir>/throttle.db`` (WAL: readers never wait for the writer). Failures
are rare and already delayed, so a write per failed AUTH costs nothing that
matters; the read at each AUTH is an indexed count.

The file names logins and client addresses, so it is private: created mode
0600 before SQLite opens it (SQLite gives its ``-wal`` and ``-shm`` files the
database's mode), its folder 0700, and an existing file or companion found
wider is narrowed at open.

Times are wall-clock seconds (``time.time``): monotonic clocks are not
comparable between processes. If the file cannot be used the state fails
open (nothing blocked) and logs it, rather than refusing every login.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from smtpgate.credentials.sqlite import use_wal
from smtpgate.policy.throttle import KNOWN_GOOD_SECONDS, MAX_LISTED
from smtpgate.server.certs import make_private_dirs

T = TypeVar("T")

log = logging.getLogger("smtpgate.throttle")

_RETENTION = {"ip": 86400.0, "login": 86400.0, "good": float(KNOWN_GOOD_SECONDS)}
_COMPANIONS = ("", "-wal", "-shm", "-journal")  # the database and SQLite's files beside it
_PRUNE_EVERY = 256  # writes between clean-ups


class SqliteThrottleState:
    def __init__(self, path: Path, *, timeout: float = 0.5) -> None:
        self._path = path
        self._timeout = timeout
        self._lock = threading.Lock()
        make_private_dirs(path.parent)
        self._conn: sqlite3.Connection | None = None
        self._writes = 0

    def add(self, table: str, key: str, now: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO events VALUES (?, ?, ?)", (table, key, now))
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                for name, keep in _RETENTION.items():
                    conn.execute("DELETE FROM events WHERE tbl = ? AND at < ?", (name, now - keep))

        self._use(write, None)

    def count(self, table: str, key: str, since: float) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM events WHERE tbl = ? AND key = ? AND at >= ?",
                (table, key, since),
            ).fetchone()
            return int(row[0])

        return self._use(read, 0)

    def last(self, table: str, key: str) -> float | None:
        def read(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT MAX(at) FROM events WHERE tbl = ? AND key = ?", (table, key)
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return self._use(read, None)

    def busiest(self, table: str, since: float, minimum: int) -> list[tuple[str, int]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            rows = conn.execute(
                "SELECT key, COUNT(*) AS n FROM events WHERE tbl = ? AND at >= ? "
                "GROUP BY key HAVING n >= ? ORDER BY n DESC, key LIMIT ?",
                (table, since, minimum, MAX_LISTED),
            )
            return [(str(key), int(n)) for key, n in rows]

        return self._use(read, [])

    def clear(self, table: str, key: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM events WHERE tbl = ? AND key = ?", (table, key))

        self._use(write, None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _use(self, work: Callable[[sqlite3.Connection], T], fallback: T) -> T:
        with self._lock:  # one connection, used by the event loop (and tests' threads)
            try:
                return work(self._connection())
            except sqlite3.Error as exc:
                log.warning("throttle state %s unusable, failing open: %s", self._path, exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                return fallback

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            _create_private(self._path)
            conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
            use_wal(conn, self._timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS events (tbl TEXT, key TEXT, at REAL)")
            conn.execute("CREATE INDEX IF NOT EXISTS events_key ON events (tbl, key, at)")
            self._conn = conn
        return self._conn


def _create_private(path: Path) -> None:
    """The database file exists with mode 0600, and so do SQLite's companions."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            companion = path.with_name(path.name + suffix)
            if companion.stat().st_mode & 0o077:
                os.chmod(companion, 0o600)
