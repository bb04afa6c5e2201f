"""The admin page's event log: AUTH outcomes and accepted messages of the last 24 hours.

Theory of operation
-------------------
Every worker writes, only the admin process reads, so the log is a small
SQLite file, ``<data_dir>/admin-events.db`` (WAL, mode 0600 like
``throttle.db``: it names logins and addresses). It exists only while
``[admin] address`` is set. A write is one INSERT without fsync
(``synchronous=NORMAL``); it is called from the event loop (AUTH) or a
delivery thread (commit), hence the lock. Every ``_PRUNE_EVERY`` writes, rows
older than ``RETENTION`` and all but the newest ``MAX_ROWS`` of a table go.
The log never stops mail: a broken file is logged and the write is dropped.
Nothing secret reaches it: an ``AuthEvent`` carries no password or payload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from smtpgate.auth.values import AuthEvent

log = logging.getLogger("smtpgate.admin")
T = TypeVar("T")

RETENTION = 86400.0  # seconds: the overview's 24 hours
MAX_ROWS = 100_000  # per table, whatever the rate
MAX_LISTED = 500  # rows one query returns
HOURS = 24
_PRUNE_EVERY = 256
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS auth (at REAL, ip TEXT, login TEXT, mechanism TEXT, outcome TEXT)",
    "CREATE INDEX IF NOT EXISTS auth_at ON auth (at)",
    "CREATE TABLE IF NOT EXISTS messages (at REAL)",
    "CREATE INDEX IF NOT EXISTS messages_at ON messages (at)",
)


@dataclass(frozen=True, slots=True)
class LoggedAuth:
    at: float
    ip: str
    login: str
    mechanism: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Hour:
    """One bar of the overview: what happened in the hour starting at ``start``."""

    start: float
    messages: int
    auth_ok: int
    auth_failed: int


class EventLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._writes = 0

    # -- writers (any worker) ------------------------------------------------
    def auth(self, event: AuthEvent) -> None:
        row = (self.clock(), event.ip, event.login, event.mechanism, event.outcome)
        self._write("INSERT INTO auth VALUES (?, ?, ?, ?, ?)", row)

    def message(self) -> None:
        self._write("INSERT INTO messages VALUES (?)", (self.clock(),))

    # -- readers (the admin page) --------------------------------------------
    def recent(
        self, *, ip: str = "", login: str = "", outcome: str = "", limit: int = MAX_LISTED
    ) -> list[LoggedAuth]:
        """Newest first; ``ip`` is a prefix, ``login`` a substring, ``outcome`` exact
        ("failed": anything but ok)."""
        where = ["at >= ?", "ip LIKE ? ESCAPE '\\'", "login LIKE ? ESCAPE '\\'"]
        args: list[object] = [self.clock() - RETENTION, _like(ip) + "%", "%" + _like(login) + "%"]
        if outcome == "failed":
            where.append("outcome != 'ok'")
        elif outcome:
            where.append("outcome = ?")
            args.append(outcome)
        query = (
            "SELECT at, ip, login, mechanism, outcome FROM auth WHERE "  # noqa: S608 (constant)
            + " AND ".join(where) + " ORDER BY at DESC LIMIT ?"
        )
        args.append(max(1, min(limit, MAX_LISTED)))
        return self._read(lambda c: [LoggedAuth(*row) for row in c.execute(query, args)], [])

    def hours(self) -> list[Hour]:
        """The last 24 whole-or-current hours, oldest first."""
        now = self.clock()
        first = (now // 3600 - (HOURS - 1)) * 3600

        def read(conn: sqlite3.Connection) -> list[Hour]:
            counts: dict[tuple[int, str], int] = {}
            for bucket, kind, n in conn.execute(
                "SELECT CAST((at - ?) / 3600 AS INTEGER), CASE outcome WHEN 'ok' THEN 'ok' "
                "ELSE 'failed' END, COUNT(*) FROM auth WHERE at >= ? GROUP BY 1, 2",
                (first, first),
            ):
                counts[(int(bucket), str(kind))] = int(n)
            for bucket, n in conn.execute(
                "SELECT CAST((at - ?) / 3600 AS INTEGER), COUNT(*) FROM messages "
                "WHERE at >= ? GROUP BY 1",
                (first, first),
            ):
                counts[(int(bucket), "msg")] = int(n)
            return [
                Hour(first + i * 3600, counts.get((i, "msg"), 0), counts.get((i, "ok"), 0),
                     counts.get((i, "failed"), 0))
                for i in range(HOURS)
            ]

        return self._read(read, [Hour(first + i * 3600, 0, 0, 0) for i in range(HOURS)])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- the file ------------------------------------------------------------
    def _write(self, statement: str, row: tuple[object, ...]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(statement, row)
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self._prune(conn)

        self._read(write, None)

    def _prune(self, conn: sqlite3.Connection) -> None:
        oldest = self.clock() - RETENTION
        for table in ("auth", "messages"):
            conn.execute(f"DELETE FROM {table} WHERE at < ?", (oldest,))  # noqa: S608
            conn.execute(
                f"DELETE FROM {table} WHERE rowid <= (SELECT MAX(rowid) FROM {table}) - ?",  # noqa: S608
                (MAX_ROWS,),
            )

    def _read(self, work: Callable[[sqlite3.Connection], T], fallback: T) -> T:
        with self._lock:
            try:
                return work(self._connection())
            except (sqlite3.Error, OSError) as exc:
                log.warning("admin event log %s unusable: %s", self.path, exc)
                if self._conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.close()
                    self._conn = None
                return fallback

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            conn = sqlite3.connect(
                self.path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
