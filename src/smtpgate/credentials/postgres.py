"""The PostgreSQL credential store (``[store] url = "postgresql://..."``).

Theory of operation
-------------------
One ``PostgresStore`` per process owns a psycopg 3 ``AsyncConnectionPool``
(at most ``MAX_CONNECTIONS`` connections, autocommit; each explicit
transaction is ``async with conn.transaction()``). The pool is opened lazily
by the first request, in the event loop that uses it, and opening never
waits for the server: a store that is down at start is one that is down.

Schema: the same tables as the SQLite store (``credentials/sqlite.py``),
written for PostgreSQL (``BYTEA`` keys, ``TIMESTAMPTZ`` times), and the same
shape of migrations: ``_MIGRATIONS[i]`` brings the schema to version
``i + 1`` and the version lives in ``schema_version``. The first request of
each process checks the version (a read, so a role without CREATE can serve
an up-to-date database); if it is behind, it takes a transaction-scoped
advisory lock (``pg_advisory_xact_lock``), checks again and applies the
missing steps in that same transaction, so two instances starting together
never run a migration twice: the second waits, then finds nothing to do.
PostgreSQL's DDL is transactional, so a failed step leaves nothing behind.

Rows are converted with the SQLite store's own helpers (same columns, same
text forms), so a column added there must be added here too (a migration in
each ``_MIGRATIONS``).

Failures: every request runs under ``asyncio.timeout(timeout)`` (waiting for
a pooled connection, the query, and a server that stopped answering); at most
``MAX_WAITING`` requests queue for a connection, the rest fail at once. Any
``psycopg.Error`` (the pool's timeout included) or the timeout becomes
``StoreUnavailable`` (454 4.7.0, not a failed login). The pool checks each
connection before lending it (an empty query, one round trip) and replaces
broken ones in the background, retrying for ``RECONNECT_TIMEOUT`` seconds and
starting afresh on the next request after that, so a restarted PostgreSQL is
used again within seconds, without restarting smtpgate. Error texts name the
host, port and database and PostgreSQL's primary message: never the URL
(it may hold a password) nor a DETAIL line (it may quote a row).

Caches: nothing is cached here; each AUTH reads the account's row, and the
verified-credentials cache (``auth/cache.py``) honours an entry only while
that row's password hash is the one it verified, so a password changed or an
account deleted through any instance applies at every instance's next AUTH.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from smtpgate.credentials.base import (
    Account,
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

MAX_CONNECTIONS = 4  # per process: a worker runs one query at a time per AUTH step
RECONNECT_TIMEOUT = 5.0  # then give up on a connection attempt; the next request retries
MAX_WAITING = 256  # requests queued for a connection; more are refused at once (454)
# pg_advisory_xact_lock key serialising migrations: b"smtpgate" as a signed 64-bit integer.
MIGRATION_LOCK = int.from_bytes(b"smtpgate", "big", signed=True)

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
            created TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    ),
    (
        """CREATE TABLE server_keys (
            purpose TEXT PRIMARY KEY NOT NULL,
            key BYTEA NOT NULL,
            created TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    ),
    (  # device accounts: the same columns as the SQLite store's migration 3
        "ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person'",
        "ALTER TABLE users ADD COLUMN senders TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE users ADD COLUMN networks TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE users ADD COLUMN max_per_day INTEGER",
        "ALTER TABLE users ADD COLUMN expires TEXT",
        "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",
    ),
    (  # admin page accounts: the SQLite store's migration 4
        """CREATE TABLE admins (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,
            created TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# From the SQLite store's column list (name first), so a column added there is written here.
_PLACEHOLDERS = ", ".join(["%s"] * len(COLUMNS.split(",")))
_ASSIGN_ALL = ", ".join(f"{column.strip()} = %s" for column in COLUMNS.split(",")[1:])


class PostgresStore:
    """``CredentialStore`` on a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
            detail = "" if ":" in userinfo else f" ({exc})"  # never echo a password
            raise ValueError(f"store url: not a PostgreSQL connection URL{detail}") from None
        self._where = _describe(params)
        self._timeout = timeout
        extra: dict[str, Any] = {"autocommit": True, "client_encoding": "UTF8"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(2, round(timeout))  # libpq: whole seconds, >= 2
        if "application_name" not in params:
            extra["application_name"] = "smtpgate"
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            kwargs=extra,
            min_size=1,
            max_size=MAX_CONNECTIONS,
            open=False,
            timeout=timeout,
            max_waiting=MAX_WAITING,
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="smtpgate-store",
        )
        self._opened = False
        self._closed = False
        self._migrated = False
        self._migrating: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    # ------------------------------------------------------------ public API

    async def get(self, name: str) -> Account | None:
        if not _storable(name):
            return None  # PostgreSQL text holds neither NUL nor unpaired surrogates
        return await self._run(lambda conn: _get(conn, name))

    def kept(self, name: str) -> Account | None:
        return None  # every AUTH reads the row: a change is seen at once by every instance

    async def add(self, account: Account) -> None:
        await self._run(lambda conn: _add_many(conn, [account]))

    async def add_many(self, accounts: Sequence[Account]) -> None:
        await self._run(lambda conn: _add_many(conn, accounts), scale=len(accounts))

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

    async def fake_secret_key(self) -> bytes:
        return await self._run(_fake_secret_key)

    async def add_admin(self, name: str, password_hash: str) -> None:
        await self._run(
            lambda conn: _admin_write(conn, _ADD_ADMIN, (name, password_hash), UserExists(name))
        )

    async def admin_hash(self, name: str) -> str | None:
        return await self._run(lambda conn: _admin_hash(conn, name)) if _storable(name) else None

    async def delete_admin(self, name: str) -> None:
        await self._run(lambda conn: _admin_write(conn, _DELETE_ADMIN, (name,), UnknownUser(name)))

    async def copy_in(self, accounts: Sequence[Account], fake_secret_key: bytes) -> None:
        """``store migrate``: add every account and set the fake-secret key, all or nothing.

        A name that already exists raises ``UserExists`` and nothing changes;
        the key replaces this store's, so unknown users look the same as before.
        """
        if len(fake_secret_key) < KEY_BYTES:
            raise ValueError("the fake-secret key to copy is too short")

        async def work(conn: Conn) -> None:
            async with conn.transaction():
                await _insert_accounts(conn, accounts)
                await conn.execute(
                    "INSERT INTO server_keys (purpose, key) VALUES (%s, %s) "
                    "ON CONFLICT (purpose) DO UPDATE SET key = EXCLUDED.key, created = now()",
                    (FAKE_SECRETS, fake_secret_key),
                )

        await self._run(work, scale=len(accounts))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._opened:
            await self._pool.close(timeout=self._timeout)

    # ------------------------------------------------------------ plumbing

    async def _run(self, work: Callable[[Conn], Awaitable[T]], *, scale: int = 0) -> T:
        """Run ``work`` on a pooled connection within the timeout (longer for bulk writes)."""
        if self._closed:
            raise StoreUnavailable("the credential store is closed")
        try:
            async with asyncio.timeout(self._timeout + scale * 0.01):
                await self._ready()
                async with self._pool.connection() as conn:
                    return await work(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"credential store {self._where}: {_reason(exc)}") from exc
        except TimeoutError:
            raise StoreUnavailable(
                f"credential store {self._where}: no answer within {self._timeout:g} s"
            ) from None

    async def _ready(self) -> None:
        """Open the pool and bring the schema up to date, once per process."""
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        if self._migrated:
            return
        if self._migrating is None:
            self._migrating = asyncio.Lock()
        async with self._migrating:
            if not self._migrated:
                async with self._pool.connection() as conn:
                    await _migrate(conn, self._where)
                self._migrated = True


def _describe(params: dict[str, Any]) -> str:
    """host:port/dbname for messages: never the password or the rest of the URL."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _reason(exc: psycopg.Error) -> str:
    """PostgreSQL's primary message (or the first line of libpq's): no DETAIL, no values."""
    primary = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
    lines = str(exc).strip().splitlines()
    text = primary or (lines[0] if lines else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _storable(name: str) -> bool:
    if "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- schema


async def _migrate(conn: Conn, where: str) -> None:
    """Bring the schema to ``SCHEMA_VERSION``: a read if current, else under the lock."""
    if await _schema_version(conn) == SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await _schema_version(conn)
        if current > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"credential store {where} has schema version {current}; this smtpgate "
                f"knows up to {SCHEMA_VERSION}: upgrade smtpgate"
            )
        if current == SCHEMA_VERSION:
            return  # another instance migrated while we waited for the lock
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                await conn.execute(statement)
        await conn.execute("DELETE FROM schema_version")
        await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))


async def _schema_version(conn: Conn) -> int:
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT MAX(version) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


# ---------------------------------------------------------------- queries


async def _get(conn: Conn, name: str) -> Account | None:
    query = f"SELECT {COLUMNS} FROM users WHERE name = %s"  # noqa: S608 (constant columns)
    cur = await conn.execute(query.encode(), (name,))
    row = await cur.fetchone()
    return None if row is None else account_from_row(row)


async def _add_many(conn: Conn, accounts: Sequence[Account]) -> None:
    async with conn.transaction():
        await _insert_accounts(conn, accounts)


async def _insert_accounts(conn: Conn, accounts: Sequence[Account]) -> None:
    """Insert every account (inside the caller's transaction); any name taken -> UserExists."""
    if not accounts:
        return
    seen: set[str] = set()
    for account in accounts:
        if account.name in seen:
            raise UserExists(account.name)
        seen.add(account.name)
    cur = await conn.execute(
        "SELECT name FROM users WHERE name = ANY(%s) ORDER BY name LIMIT 1",
        ([account.name for account in accounts],),
    )
    taken = await cur.fetchone()
    if taken is not None:
        raise UserExists(taken[0])
    insert = f"INSERT INTO users ({COLUMNS}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
    try:
        async with conn.cursor() as cursor:
            await cursor.executemany(insert.encode(), [account_row(a) for a in accounts])
    except psycopg.errors.UniqueViolation:
        # Added by someone else since our check: the transaction is void, nothing added.
        raise UserExists(", ".join(sorted(seen))) from None


async def _replace(conn: Conn, account: Account) -> None:
    values = account_row(account)
    cur = await conn.execute(
        f"UPDATE users SET {_ASSIGN_ALL}, updated = now() WHERE name = %s".encode(),  # noqa: S608
        (*values[1:], account.name),
    )
    if cur.rowcount != 1:
        raise UnknownUser(account.name)


async def _update_secrets(
    conn: Conn, name: str, update: SecretsUpdate, if_hash: str | bool | None
) -> None:
    """Write every field the update gives (None: keep) in one statement."""
    given = {
        column: value
        for column, value in zip(SECRET_COLUMNS, secrets_row(update), strict=True)
        if value is not None
    }
    assignments = "".join(f"{column} = %s, " for column in given)
    condition, extra = (
        ("", ()) if if_hash is False else (" AND password_hash IS NOT DISTINCT FROM %s", (if_hash,))
    )
    query = f"UPDATE users SET {assignments}updated = now() WHERE name = %s{condition}"  # noqa: S608
    async with conn.transaction():
        cur = await conn.execute(query.encode(), (*given.values(), name, *extra))
        if cur.rowcount == 1:
            return
        if if_hash is not False:
            cur = await conn.execute("SELECT 1 FROM users WHERE name = %s", (name,))
            if await cur.fetchone() is not None:
                raise StaleAccount(name)
        raise UnknownUser(name)


async def _delete(conn: Conn, name: str) -> None:
    cur = await conn.execute("DELETE FROM users WHERE name = %s", (name,))
    if cur.rowcount != 1:
        raise UnknownUser(name)


async def _names(conn: Conn) -> list[str]:
    # COLLATE "C": code-point order, the same as SQLite's, whatever the database's locale.
    cur = await conn.execute('SELECT name FROM users ORDER BY name COLLATE "C"')
    return [str(row[0]) for row in await cur.fetchall()]


async def _fake_secret_key(conn: Conn) -> bytes:
    """The key behind unknown users' fake secrets, made on first use; the first writer wins."""
    await conn.execute(
        "INSERT INTO server_keys (purpose, key) VALUES (%s, %s) ON CONFLICT (purpose) DO NOTHING",
        (FAKE_SECRETS, secrets.token_bytes(KEY_BYTES)),
    )
    cur = await conn.execute("SELECT key FROM server_keys WHERE purpose = %s", (FAKE_SECRETS,))
    row = await cur.fetchone()
    key = b"" if row is None else bytes(row[0])
    if len(key) < KEY_BYTES:
        raise StoreUnavailable("the stored server key is malformed")
    return key


_ADD_ADMIN = "INSERT INTO admins (name, password_hash) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_DELETE_ADMIN = "DELETE FROM admins WHERE name = %s"


async def _admin_write(
    conn: Conn, query: str, params: tuple[str, ...], unchanged: Exception
) -> None:
    """Add or delete one admin row; raise ``unchanged`` when no row changed."""
    if (await conn.execute(query, params)).rowcount != 1:
        raise unchanged


async def _admin_hash(conn: Conn, name: str) -> str | None:
    cur = await conn.execute("SELECT password_hash FROM admins WHERE name = %s", (name,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])
