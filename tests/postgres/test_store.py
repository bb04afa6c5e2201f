"""The PostgreSQL store on a real server: the SQLite store's tests, then its own.

The store tests of tests/credentials that are about the contract (not the
file) are imported here: pytest runs them again with this module's ``store``
fixture, a ``PostgresStore`` on a fresh database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smtpgate.credentials.base import (
    Account,
    CredentialStore,
    SecretsUpdate,
    StaleAccount,
    StoreUnavailable,
    UnknownUser,
    UserExists,
)
from smtpgate.credentials.open import open_store
from smtpgate.credentials.postgres import MIGRATION_LOCK, SCHEMA_VERSION, PostgresStore
from smtpgate.credentials.sqlite import SqliteStore
from tests.credentials.test_sqlite import (  # noqa: F401 (run here again)
    FULL,
    test_add_many_is_all_or_nothing,
    test_add_twice_is_user_exists,
    test_delete,
    test_empty_allowed_set_differs_from_none,
    test_names_are_stored_exactly,
    test_replace,
    test_requests_are_serialised,
    test_round_trip_every_field,
    test_update_secrets_keeps_what_is_not_given,
    test_update_secrets_writes_all_given_fields,
)
from tests.postgres.cluster import PgCluster


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url, timeout=2.0)
    yield store
    await store.close()


def test_implements_the_protocol_and_hides_the_password(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    store: CredentialStore = PostgresStore(pg_url)
    assert repr(store) == f"PostgresStore('postgresql://127.0.0.1:{pg_cluster.port}/{_db(pg_url)}')"
    assert pg_cluster.password not in repr(store)


def test_open_store_dispatches_on_the_scheme(pg_url: str, tmp_path: Path) -> None:
    assert isinstance(open_store(pg_url, tmp_path), PostgresStore)
    alias = pg_url.replace("postgresql://", "postgres://")
    assert isinstance(open_store(alias, tmp_path), PostgresStore)
    with pytest.raises(ValueError, match="not a PostgreSQL connection URL"):
        open_store("postgresql://host/db?nosuchoption=1", tmp_path)
    assert isinstance(open_store("sqlite:///users.db", tmp_path), SqliteStore)
    with pytest.raises(ValueError, match="'mysql'"):
        open_store("mysql://db.example/users", tmp_path)


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


# ---------------------------------------------------------------- conditional update


async def test_conditional_update_writes_only_while_hash_unchanged(store: PostgresStore) -> None:
    await store.add(Account("alice", password_hash="{PLAIN}old"))
    await store.update_secrets(
        "alice", SecretsUpdate(password_hash="{PLAIN}new"), if_hash="{PLAIN}old"
    )
    with pytest.raises(StaleAccount):
        await store.update_secrets(
            "alice", SecretsUpdate(password_hash="{PLAIN}stale"), if_hash="{PLAIN}old"
        )
    account = await store.get("alice")
    assert account is not None and account.password_hash == "{PLAIN}new"
    with pytest.raises(UnknownUser):
        await store.update_secrets("bob", SecretsUpdate(password_hash="{PLAIN}x"), if_hash=None)


async def test_conditional_update_on_account_without_hash(store: PostgresStore) -> None:
    await store.add(Account("carol"))
    with pytest.raises(StaleAccount):
        await store.update_secrets("carol", SecretsUpdate(password_hash="{PLAIN}x"), if_hash="y")
    await store.update_secrets("carol", SecretsUpdate(password_hash="{PLAIN}x"), if_hash=None)
    account = await store.get("carol")
    assert account is not None and account.password_hash == "{PLAIN}x"


# ---------------------------------------------------------------- names and keys


async def test_names_postgresql_cannot_hold_are_unknown(store: PostgresStore) -> None:
    await store.add(Account(name="u"))
    assert await store.get("u\x00") is None
    assert await store.get("u\udc80") is None


async def test_names_in_code_point_order(store: PostgresStore) -> None:
    await store.add_many([Account(name=n) for n in ("b", "B", "a", "é", "_")])
    assert await store.names() == ["B", "_", "a", "b", "é"]


async def test_fake_secret_key_is_made_once_and_shared(pg_url: str, pg_cluster: PgCluster) -> None:
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)  # two instances
    keys = await asyncio.gather(first.fake_secret_key(), second.fake_secret_key())
    assert len(keys[0]) == 32 and keys[0] == keys[1]
    await first.close()
    await second.close()
    reopened = PostgresStore(pg_url)
    assert await reopened.fake_secret_key() == keys[0]
    await reopened.close()
    elsewhere = PostgresStore(pg_cluster.database())
    assert await elsewhere.fake_secret_key() != keys[0]
    await elsewhere.close()


async def test_copy_in_is_all_or_nothing(store: PostgresStore) -> None:
    key = bytes(range(32))
    await store.add(Account(name="b"))
    with pytest.raises(UserExists):
        await store.copy_in([Account(name="a"), Account(name="b")], key)
    assert await store.names() == ["b"]
    assert await store.fake_secret_key() != key
    await store.add_many([])
    await store.copy_in([], key)  # an empty source still brings its key
    assert await store.fake_secret_key() == key
    await store.copy_in([FULL, Account(name="c")], bytes(reversed(key)))
    assert await store.get(FULL.name) == FULL
    assert await store.fake_secret_key() == bytes(reversed(key))
    assert await store.names() == ["alice@example.org", "b", "c"]


# ---------------------------------------------------------------- schema


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


async def test_instances_starting_together_migrate_once(pg_url: str) -> None:
    """Eight processes' worth of stores on a new database: one migration, all serve."""
    stores = [PostgresStore(pg_url) for _ in range(8)]
    try:
        results = await asyncio.gather(*(s.get("u") for s in stores), return_exceptions=True)
        assert results == [None] * 8
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert _query(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_migration_waits_for_the_advisory_lock(pg_url: str) -> None:
    """While another session holds the migration lock, a new store waits; then proceeds."""
    store = PostgresStore(pg_url, timeout=1.0)
    holder = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        with pytest.raises(StoreUnavailable, match="no answer within"):
            await store.get("u")
        assert _query(pg_url, "SELECT to_regclass('users')") == [(None,)]
        await holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        assert await store.get("u") is None
    finally:
        await holder.close()
        await store.close()


async def test_migration_from_version_1_and_idempotence(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.add(Account(name="old"))
    await store.close()
    _query(  # back to version 1: no key table, no device columns, no admins
        pg_url,
        "DROP TABLE server_keys, admins; ALTER TABLE users DROP COLUMN kind, DROP COLUMN senders,"
        " DROP COLUMN networks, DROP COLUMN max_per_day, DROP COLUMN expires,"
        " DROP COLUMN disabled; UPDATE schema_version SET version = 1",
    )
    for _ in range(2):
        store = PostgresStore(pg_url)
        assert len(await store.fake_secret_key()) == 32
        assert await store.names() == ["old"]
        await store.close()
    assert _query(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_newer_schema_is_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.names()
    await store.close()
    _query(pg_url, "UPDATE schema_version SET version = 99")
    store = PostgresStore(pg_url)
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        await store.get("u")
    await store.close()


async def test_closed_store_is_unavailable(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.add(Account(name="u"))
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get("u")


# ---------------------------------------------------------------- failures


async def test_malformed_row_names_no_secret(store: PostgresStore, pg_url: str) -> None:
    await store.add(FULL)
    _query(pg_url, "UPDATE users SET scram_sha256 = 'SCRAM-SHA-256$not-a-secret-XYZZY'")
    with pytest.raises(StoreUnavailable) as info:
        await store.get(FULL.name)
    assert "XYZZY" not in str(info.value)
    assert "malformed" in str(info.value)


async def test_dropped_table(store: PostgresStore, pg_url: str) -> None:
    await store.add(Account(name="u"))
    _query(pg_url, "DROP TABLE users")
    with pytest.raises(StoreUnavailable, match="UndefinedTable"):
        await store.get("u")
    with pytest.raises(StoreUnavailable):  # stays unavailable, does not crash
        await store.names()


async def test_lock_held_past_timeout_then_heals(pg_url: str) -> None:
    """A query that blocks (a table lock held elsewhere) times out as StoreUnavailable."""
    store = PostgresStore(pg_url, timeout=0.5)
    await store.add(Account(name="before"))
    holder = await psycopg.AsyncConnection.connect(pg_url)
    try:
        await holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no answer within"):
            await store.get("before")
        assert 0.4 < time.monotonic() - started < 5
        await holder.rollback()
    finally:
        await holder.close()
    await store.add(Account(name="after"))
    assert await store.names() == ["after", "before"]
    await store.close()


async def test_wrong_password_is_unavailable_and_not_echoed(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url(password="WRONG-PASSWORD-XYZZY")
    store = PostgresStore(url, timeout=1.0)
    with pytest.raises(StoreUnavailable) as info:
        await store.get("u")
    assert "XYZZY" not in str(info.value) and "127.0.0.1" in str(info.value)
    await store.close()


async def test_server_down_then_back_without_restart(pg_cluster: PgCluster) -> None:
    """Stopped: every request is StoreUnavailable within the timeout. Started: served again."""
    url = pg_cluster.database()
    store = PostgresStore(url, timeout=1.0)
    try:
        await store.add(Account(name="u"))
        pg_cluster.stop()
        try:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.get("u")
                assert time.monotonic() - started < 3
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await store.get("u") == Account(name="u")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back"
                await asyncio.sleep(0.2)
    finally:
        await store.close()


async def test_requests_log_nothing(store: PostgresStore, caplog: pytest.LogCaptureFixture) -> None:
    """The pool's per-request INFO lines would flood a busy server's log (psycopg's
    own "psycopg" logger is at WARNING: this fails if that default ever changes)."""
    caplog.set_level(logging.DEBUG, logger="smtpgate")
    caplog.set_level(logging.INFO)
    await store.add(FULL)
    for _ in range(3):
        assert await store.get(FULL.name) == FULL
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
