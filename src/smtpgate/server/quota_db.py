"""A DailyQuota shared by worker processes, in a small SQLite file.

Every worker counts a device's messages in ``<data_dir>/quota.db``, so
``max_per_day`` holds for the server, not per process, and survives a
restart. One row per account and UTC day; counting is one statement::

    INSERT INTO counts VALUES (account, day, 1)
    ON CONFLICT DO UPDATE SET n = n + 1 WHERE n < limit

which SQLite runs under its write lock: it changes a row (counted) or not
(at the limit), so two workers can never both take the last message. Rows
of days before yesterday are deleted now and then.

The file names accounts, so it is private like ``server/throttle_db.py``:
created 0600 (SQLite gives ``-wal`` and ``-shm`` the same mode), its folder
0700, and a wider existing file is narrowed at open. Unlike the throttle, a
failure here raises ``QuotaUnavailable`` (the MAIL FROM is answered 451
4.3.0): a quota that failed open would not limit a stolen device password.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

from smtpgate.server.certs import make_private_dirs
from smtpgate.server.senders import QuotaUnavailable
from smtpgate.server.throttle_db import _create_private

T = TypeVar("T")
log = logging.getLogger("smtpgate.quota")
_PRUNE_EVERY = 256  # counted messages between clean-ups


class SqliteQuota:
    def __init__(self, path: Path, *, timeout: float = 2.0) -> None:
        self._path = path
        self._timeout = timeout
        self._lock = threading.Lock()  # one connection, used from worker threads in turn
        self._conn: sqlite3.Connection | None = None
        self._taken = 0

    def take(self, account: str, day: str, limit: int) -> bool:
        if limit < 1:
            return False

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO counts (account, day, n) VALUES (?, ?, 1) "
                "ON CONFLICT (account, day) DO UPDATE SET n = n + 1 WHERE n < ?",
                (account, day, limit),
            )
            counted = cursor.rowcount == 1
            self._taken += 1
            if self._taken % _PRUNE_EVERY == 0:
                yesterday = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
                conn.execute("DELETE FROM counts WHERE day < ?", (yesterday,))
            return counted

        return self._use(write)

    def count(self, account: str, day: str) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT n FROM counts WHERE account = ? AND day = ?", (account, day)
            ).fetchone()
            return 0 if row is None else int(row[0])

        return self._use(read)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _use(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return work(self._connection())
            except (sqlite3.Error, OSError) as exc:
                log.warning("quota store %s unusable: %s", self._path, exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise QuotaUnavailable(str(self._path)) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            make_private_dirs(self._path.parent)
            _create_private(self._path)
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS counts (account TEXT NOT NULL, day TEXT NOT NULL, "
                "n INTEGER NOT NULL, PRIMARY KEY (account, day))"
            )
            self._conn = conn
        return self._conn
