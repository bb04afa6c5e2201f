"""The SQLite credential store.

Theory of operation
-------------------
One ``SqliteStore`` owns one connection, used only from one dedicated worker
thread (a ``ThreadPoolExecutor`` with a single worker). The async methods
hand a small function to that thread and await it, so requests are
serialised without locks and the event loop never blocks on disk.

Accounts already read are kept while nothing has changed (``get``, once per
AUTH): a second, read-only connection asks SQLite on the event loop for
``PRAGMA data_version``, which changes whenever any other connection -- this
store's own, another worker's, the ``smtpgate`` command's -- has committed to
the file. While it is the value seen before an account was read, the kept
account is the current one, so a login skips the thread hop (two thread
switches on the loop's core) and a change still counts at the next AUTH. The
pragma reads SQLite's shared-memory index and never waits for a lock (busy
timeout 0); any error there falls back to the worker thread.

The connection is opened lazily by the first request: parent folders are
created with mode 0700 and the database file with 0600, the journal is
switched to WAL (readers never wait for the one writer), ``busy_timeout``
bounds how long we wait for another process's lock, and the schema is
brought up to date. The schema's version lives in the ``schema_version``
table; ``_MIGRATIONS`` lists the steps, applied in order in one
transaction. A database newer than this code is refused.

Any ``sqlite3.Error`` (a missing table, "file is not a database", a lock
held past the timeout, a disk I/O error) becomes ``StoreUnavailable`` and
closes the connection; the next request opens it afresh, so the store heals
when the file does. The server answers such failures 454 4.7.0. Error texts
name the file and SQLite's complaint, never a value from a row.

The key behind unknown users' fake secrets is one row of ``server_keys``,
made by the first process that needs it: ``INSERT OR IGNORE`` then
``SELECT``, so two workers starting at once still agree on one key.

Rows hold secrets as text: SCRAM secrets in RFC 5803 form, the CRAM-MD5
contexts as hex, the password hash as Dovecot ``{SCHEME}...``. Mechanism
lists, authorization identities, device senders and networks are
comma-separated; a device's last valid day is ``YYYY-MM-DD`` (migration 3
added the device columns; rows that existed before it are people).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from smtpgate.credentials.base import (
    Account,
    CredentialStore,
    SecretsUpdate,
    StaleAccount,
    StoreUnavailable,
    UnknownUser,
    UserExists,
)
from smtpgate.credentials.rows import (
    COLUMNS,
    FAKE_SECRETS,
    KEY_BYTES,
    SECRET_COLUMNS,
    account_from_row,
    account_row,
    secrets_row,
)

__all__ = ["SqliteStore", "open_store"]

T = TypeVar("T")

# Each migration is a list of statements; migration i brings the schema to version i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT,
            scram_sha1 TEXT,
            scram_sha256 TEXT,
            cram_md5 TEXT,
            allowed_mechanisms TEXT,
            may_act_as TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )""",
    ),
    (
        """CREATE TABLE server_keys (
            purpose TEXT PRIMARY KEY NOT NULL,
            key BLOB NOT NULL,
            created TEXT NOT NULL
        )""",
    ),
    (  # device accounts (credentials/devices.py); existing users become people
        "ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person'",
        "ALTER TABLE users ADD COLUMN senders TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE users ADD COLUMN networks TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE users ADD COLUMN max_per_day INTEGER",
        "ALTER TABLE users ADD COLUMN expires TEXT",
        "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",
    ),
    (  # admin page accounts (docs/admin.md): apart from SMTP users, never an SMTP login
        """CREATE TABLE admins (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,
            created TEXT NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_UPDATABLE = [column.strip() for column in COLUMNS.split(",")][1:]
MAX_KEPT_ACCOUNTS = 4096  # accounts (and unknown names) kept while the file is unchanged


class SqliteStore:
    """``CredentialStore`` on one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self._path = Path(path)
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtpgate-sqlite")
        self._probe: sqlite3.Connection | None = None  # data_version, on the event loop
        self._version: int | None = None  # the data_version the kept accounts were read at
        self._accounts: dict[str, Account | None] = {}

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    # ------------------------------------------------------------ public API

    async def get(self, name: str) -> Account | None:
        """The account as stored now: kept from an earlier read while the file is unchanged
        (see the module docstring), else read in the worker thread."""
        version = self._data_version()
        if version is None or version != self._version:
            self._accounts.clear()
            self._version = version
        elif name in self._accounts:
            return self._accounts[name]
        account = await self._run(lambda conn: self._get_and_probe(conn, name))
        if version is not None and version == self._version:  # nothing changed meanwhile
            if len(self._accounts) >= MAX_KEPT_ACCOUNTS:
                self._accounts.clear()
            self._accounts[name] = account
        return account

    def kept(self, name: str) -> Account | None:
        """The account ``get`` would return from memory: read before and the file
        unchanged since (``data_version``, on the event loop). None: ask ``get``."""
        version = self._data_version()
        if version is None or version != self._version:
            return None
        return self._accounts.get(name)

    async def add(self, account: Account) -> None:
        await self._run(lambda conn: _add_many(conn, [account]))

    async def add_many(self, accounts: Sequence[Account]) -> None:
        await self._run(lambda conn: _add_many(conn, accounts))

    async def replace(self, account: Account) -> None:
        await self._run(lambda conn: _replace(conn, account))

    async def update_secrets(
        self, name: str, update: SecretsUpdate, *, if_hash: str | bool | None = False
    ) -> None:
        await self._run(lambda conn: _update_secrets(conn, name, update, if_hash))

    async def delete(self, name: str) -> None:
        await self._run(lambda conn: _delete(conn, name))

    async def names(self) -> list[str]:
        return await self._run(_names)

    async def add_admin(self, name: str, password_hash: str) -> None:
        await self._run(lambda conn: _add_admin(conn, name, password_hash))

    async def admin_hash(self, name: str) -> str | None:
        return await self._run(lambda conn: _admin_hash(conn, name))

    async def delete_admin(self, name: str) -> None:
        await self._run(lambda conn: _delete_admin(conn, name))

    async def fake_secret_key(self) -> bytes:
        return await self._run(lambda conn: _server_key(conn, FAKE_SECRETS))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_probe()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drop)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------ worker side

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the credential store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._connection())
        except sqlite3.Error as exc:
            self._drop()
            raise StoreUnavailable(f"credential store {self._path}: {exc}") from exc
        except OSError as exc:
            self._drop()
            raise StoreUnavailable(
                f"credential store {self._path}: {exc.strerror or type(exc).__name__}"
            ) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            _create_private(self._path)
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=True
            )
            try:
                _configure(conn, self._timeout)
                _migrate(conn, self._path)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _get_and_probe(self, conn: sqlite3.Connection, name: str) -> Account | None:
        """``_get``, and the read-only connection for ``data_version`` opened on the way:
        from the next ``get`` on, an unchanged file is seen on the event loop."""
        if self._probe is None:
            with contextlib.suppress(sqlite3.Error):
                self._probe = sqlite3.connect(
                    f"{self._path.resolve().as_uri()}?mode=ro", uri=True, timeout=0,
                    isolation_level=None, check_same_thread=False,
                )
        return _get(conn, name)

    def _data_version(self) -> int | None:
        """SQLite's ``data_version`` of the file (event loop); None: unknown, read anew."""
        probe = self._probe
        if probe is None:
            return None
        try:
            return int(probe.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self._close_probe()  # the next read in the worker thread opens it again
            return None

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(sqlite3.Error):
                probe.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def open_store(url: str, data_dir: Path) -> CredentialStore:
    """Open the store a config's ``store.url`` names.

    ``sqlite:///users.db`` is relative to ``data_dir``; ``sqlite:////abs/users.db``
    is absolute. Other schemes: ValueError naming the scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"store url {url!r} has no scheme (expected sqlite:///FILE)")
    if scheme.lower() != "sqlite":
        raise ValueError(f"unsupported store scheme {scheme!r} (only 'sqlite' is available)")
    if not rest.startswith("/") or rest == "/":
        raise ValueError(f"store url {url!r}: expected sqlite:///FILE or sqlite:////ABS/FILE")
    target = rest[1:]
    path = Path(target) if target.startswith("/") else Path(data_dir) / target
    return SqliteStore(path)


# ---------------------------------------------------------------- opening


def _create_private(path: Path) -> None:
    """Missing parent folders get mode 0700, a missing database file 0600.

    Modes are set explicitly, whatever the umask. SQLite gives the -wal and
    -shm files the database file's mode, so they are 0600 too.
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing file keeps the mode its owner chose
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _configure(conn: sqlite3.Connection, timeout: float) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    use_wal(conn, timeout)
    conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; durable at checkpoints
    conn.execute("PRAGMA foreign_keys = ON")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction (no write if current)."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    with _transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = _schema_version(conn)
        if current > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"credential store {path} has schema version {current}; this smtpgate "
                f"knows up to {SCHEMA_VERSION}: upgrade smtpgate"
            )
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (take the write lock now) ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ---------------------------------------------------------------- queries


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _get(conn: sqlite3.Connection, name: str) -> Account | None:
    query = f"SELECT {COLUMNS} FROM users WHERE name = ?"  # noqa: S608 (constant columns)
    row = conn.execute(query, (name,)).fetchone()
    return None if row is None else account_from_row(row)


def _add_many(conn: sqlite3.Connection, accounts: Sequence[Account]) -> None:
    now = _now()
    insert = (
        f"INSERT INTO users ({COLUMNS}, created, updated) "  # noqa: S608 (constant columns)
        f"VALUES ({', '.join('?' * (len(_UPDATABLE) + 3))}) ON CONFLICT (name) DO NOTHING"
    )
    with _transaction(conn):
        for account in accounts:
            cursor = conn.execute(insert, (*account_row(account), now, now))
            if cursor.rowcount != 1:
                raise UserExists(account.name)


def _replace(conn: sqlite3.Connection, account: Account) -> None:
    values = account_row(account)
    with _transaction(conn):
        assignments = "".join(f"{column} = ?, " for column in _UPDATABLE)
        cursor = conn.execute(
            f"UPDATE users SET {assignments}updated = ? WHERE name = ?",  # noqa: S608 (constant)
            (*values[1:], _now(), account.name),
        )
        if cursor.rowcount != 1:
            raise UnknownUser(account.name)


def _update_secrets(
    conn: sqlite3.Connection, name: str, update: SecretsUpdate, if_hash: str | bool | None
) -> None:
    """Write every field the update gives (None: keep) in one transaction."""
    given = {
        column: value
        for column, value in zip(SECRET_COLUMNS, secrets_row(update), strict=True)
        if value is not None
    }
    assignments = "".join(f"{column} = ?, " for column in given)
    with _transaction(conn):
        condition, extra = ("", ()) if if_hash is False else (" AND password_hash IS ?", (if_hash,))
        cursor = conn.execute(
            f"UPDATE users SET {assignments}updated = ? WHERE name = ?{condition}",  # noqa: S608
            (*given.values(), _now(), name, *extra),
        )
        if cursor.rowcount == 1:
            return
        if if_hash is not False and conn.execute(
            "SELECT 1 FROM users WHERE name = ?", (name,)
        ).fetchone():
            raise StaleAccount(name)
        raise UnknownUser(name)


def _delete(conn: sqlite3.Connection, name: str) -> None:
    with _transaction(conn):
        cursor = conn.execute("DELETE FROM users WHERE name = ?", (name,))
        if cursor.rowcount != 1:
            raise UnknownUser(name)


def _names(conn: sqlite3.Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute("SELECT name FROM users ORDER BY name")]


def _add_admin(conn: sqlite3.Connection, name: str, password_hash: str) -> None:
    with _transaction(conn):
        cursor = conn.execute(
            "INSERT INTO admins (name, password_hash, created) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (name, password_hash, _now()),
        )
        if cursor.rowcount != 1:
            raise UserExists(name)


def _admin_hash(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT password_hash FROM admins WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _delete_admin(conn: sqlite3.Connection, name: str) -> None:
    with _transaction(conn):
        if conn.execute("DELETE FROM admins WHERE name = ?", (name,)).rowcount != 1:
            raise UnknownUser(name)


def _server_key(conn: sqlite3.Connection, purpose: str) -> bytes:
    """The key stored for ``purpose``, made on first use; the first writer wins a race."""
    select = "SELECT key FROM server_keys WHERE purpose = ?"
    row = conn.execute(select, (purpose,)).fetchone()
    if row is None:
        with _transaction(conn):
            conn.execute(
                "INSERT OR IGNORE INTO server_keys (purpose, key, created) VALUES (?, ?, ?)",
                (purpose, secrets.token_bytes(KEY_BYTES), _now()),
            )
        row = conn.execute(select, (purpose,)).fetchone()
    key = bytes(row[0])
    if len(key) < KEY_BYTES:
        raise StoreUnavailable("the stored server key is malformed")
    return key


# ---------------------------------------------------------------- rows


def use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch ``conn``'s database to WAL, waiting out a concurrent switch.

    WAL is a property of the file, so a process that finds it on does nothing.
    Turning it on takes an exclusive lock, and SQLite may answer "database is
    locked" at once, without its busy handler, when several processes open a
    new file together (several workers starting): retry until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
