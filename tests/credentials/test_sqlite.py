"""The SQLite store on real files: round trips, schema, failures -> StoreUnavailable."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from smtpgate.credentials.base import (
    Account,
    CredentialStore,
    SecretsUpdate,
    StoreUnavailable,
    UnknownUser,
    UserExists,
)
from smtpgate.credentials.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore, open_store
from smtpgate.sasl.cram_md5 import cram_md5_secret
from smtpgate.sasl.scram import derive_scram_secret

SHA1 = derive_scram_secret("SCRAM-SHA-1", "pencil", b"salt-sha1-16byte", 4096)
SHA256 = derive_scram_secret("SCRAM-SHA-256", "pencil", b"salt-sha256-16by", 4096)
CRAM = cram_md5_secret("pencil")

FULL = Account(
    name="alice@example.org",
    password_hash="{PLAIN}pencil",
    scram_sha1=SHA1,
    scram_sha256=SHA256,
    cram_md5=CRAM,
    allowed_mechanisms=frozenset({"SCRAM-SHA-256", "PLAIN"}),
    may_act_as=frozenset({"sales@example.org", "info@example.org"}),
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sub" / "users.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path, timeout=0.2)
    yield store
    await store.close()


def test_implements_the_protocol(db_path: Path) -> None:
    store: CredentialStore = SqliteStore(db_path)  # mypy checks the protocol here
    assert repr(store) == f"SqliteStore({str(db_path)!r})"


# ---------------------------------------------------------------- round trips


async def test_round_trip_every_field(store: SqliteStore) -> None:
    await store.add(FULL)
    assert await store.get(FULL.name) == FULL
    bare = Account(name="bob")
    await store.add(bare)
    assert await store.get("bob") == bare
    assert await store.names() == ["alice@example.org", "bob"]


async def test_names_are_stored_exactly(store: SqliteStore) -> None:
    await store.add(Account(name="Bob"))
    assert await store.get("bob") is None
    assert await store.get("Bob") == Account(name="Bob")


async def test_empty_allowed_set_differs_from_none(store: SqliteStore) -> None:
    await store.add(Account(name="none", allowed_mechanisms=None))
    account = await store.get("none")
    assert account is not None and account.allowed_mechanisms is None


async def test_add_twice_is_user_exists(store: SqliteStore) -> None:
    await store.add(Account(name="bob"))
    with pytest.raises(UserExists):
        await store.add(Account(name="bob", password_hash="{PLAIN}x"))
    assert await store.get("bob") == Account(name="bob")


async def test_add_many_is_all_or_nothing(store: SqliteStore) -> None:
    await store.add(Account(name="b"))
    with pytest.raises(UserExists):
        await store.add_many([Account(name="a"), Account(name="b"), Account(name="c")])
    assert await store.names() == ["b"]
    with pytest.raises(UserExists):
        await store.add_many([Account(name="x"), Account(name="x")])
    assert await store.names() == ["b"]
    await store.add_many([Account(name="a"), Account(name="c")])
    assert await store.names() == ["a", "b", "c"]


async def test_replace(store: SqliteStore) -> None:
    await store.add(FULL)
    changed = Account(name=FULL.name, password_hash="{PLAIN}new", may_act_as=frozenset({"x"}))
    await store.replace(changed)
    assert await store.get(FULL.name) == changed
    with pytest.raises(UnknownUser):
        await store.replace(Account(name="nobody"))


async def test_update_secrets_keeps_what_is_not_given(store: SqliteStore) -> None:
    await store.add(Account(name="u", password_hash="{PLAIN}old", cram_md5=CRAM))
    await store.update_secrets("u", SecretsUpdate(scram_sha1=SHA1, scram_sha256=SHA256))
    account = await store.get("u")
    assert account == Account(
        name="u", password_hash="{PLAIN}old", scram_sha1=SHA1, scram_sha256=SHA256, cram_md5=CRAM
    )


async def test_update_secrets_writes_all_given_fields(store: SqliteStore) -> None:
    await store.add(Account(name="u", password_hash="{PLAIN}old"))
    other = cram_md5_secret("other")
    update = SecretsUpdate(
        password_hash="{PLAIN}new", scram_sha1=SHA1, scram_sha256=SHA256, cram_md5=other
    )
    await store.update_secrets("u", update)
    assert await store.get("u") == Account(
        name="u", password_hash="{PLAIN}new", scram_sha1=SHA1, scram_sha256=SHA256, cram_md5=other
    )
    with pytest.raises(UnknownUser):
        await store.update_secrets("nobody", update)


async def test_delete(store: SqliteStore) -> None:
    await store.add(Account(name="u"))
    await store.delete("u")
    assert await store.get("u") is None
    with pytest.raises(UnknownUser):
        await store.delete("u")


async def test_requests_are_serialised(store: SqliteStore) -> None:
    await asyncio.gather(*(store.add(Account(name=f"user{i:02}")) for i in range(30)))
    assert await store.names() == [f"user{i:02}" for i in range(30)]


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.add(Account(name="u"))
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get("u")


# ---------------------------------------------------------------- the file


async def test_wal_and_private_permissions(store: SqliteStore, db_path: Path) -> None:
    old = os.umask(0o002)  # a loose umask must not loosen what the store creates
    try:
        await store.add(FULL)  # a write: the -wal and -shm files exist while it is open
    finally:
        os.umask(old)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for suffix in ("", "-wal", "-shm"):
        path = db_path.with_name(db_path.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.parent.parent.stat().st_mode) == 0o700


# ---------------------------------------------------------------- the fake-secret key


async def test_fake_secret_key_is_made_once_and_kept(db_path: Path, tmp_path: Path) -> None:
    first = SqliteStore(db_path)
    second = SqliteStore(db_path)  # another worker on the same file
    key = await first.fake_secret_key()
    assert len(key) == 32
    assert await second.fake_secret_key() == key
    await first.close()
    await second.close()
    reopened = SqliteStore(db_path)  # a restart
    assert await reopened.fake_secret_key() == key
    await reopened.close()
    elsewhere = SqliteStore(tmp_path / "other.db")
    assert await elsewhere.fake_secret_key() != key
    await elsewhere.close()


_OPEN_AND_PRINT_KEY = """
import asyncio, sys, time
from datetime import date
from pathlib import Path
from smtpgate.credentials.sqlite import SqliteStore
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # every process starts at the same instant
async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]))
    print((await store.fake_secret_key()).hex())
    await store.close()
asyncio.run(main())
"""


def test_fake_secret_key_race_between_processes(db_path: Path) -> None:
    """Workers that start at once on a new file (schema and key both missing) agree."""
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_PRINT_KEY, str(db_path), start],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]
    keys = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.add(out.strip())
    assert len(keys) == 1 and len(keys.pop()) == 64


def _old_database(path: Path, version: int) -> None:
    """A database as release ``version`` left it, with one user "old"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        for statements in _MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        conn.execute(
            "INSERT INTO users (name, password_hash, allowed_mechanisms, may_act_as, created, "
            "updated) VALUES ('old', '{PLAIN}x', 'PLAIN', 'boss', 'then', 'then')"
        )


async def test_migration_from_version_1_adds_the_key_table(db_path: Path) -> None:
    _old_database(db_path, 1)
    store = SqliteStore(db_path)
    assert len(await store.fake_secret_key()) == 32
    assert await store.names() == ["old"]
    await store.close()


async def test_migration_from_version_2_makes_existing_users_people(db_path: Path) -> None:
    _old_database(db_path, 2)
    store = SqliteStore(db_path)
    old = await store.get("old")
    assert old is not None
    assert (old.password_hash, old.allowed_mechanisms, old.may_act_as) == (
        "{PLAIN}x", frozenset({"PLAIN"}), frozenset({"boss"})
    )
    assert (old.kind, old.senders, old.networks) == ("person", (), ())
    assert (old.max_per_day, old.expires, old.disabled) == (None, None, False)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_device_fields_round_trip(db_path: Path) -> None:
    device = Account(
        name="copier", password_hash="{PLAIN}x", kind="device",
        senders=("scan@example.org", "*@example.net"), networks=("127.0.0.2/32", "::1/128"),
        max_per_day=5, expires=date(2030, 1, 31), disabled=True,
    )
    store = SqliteStore(db_path)
    await store.add(device)
    assert await store.get("copier") == device
    enabled = dataclasses.replace(device, disabled=False, networks=(), expires=None)
    await store.replace(enabled)
    assert await store.get("copier") == enabled
    await store.close()


async def test_migrations_are_idempotent(db_path: Path) -> None:
    for round_ in range(3):
        store = SqliteStore(db_path)
        await store.add(Account(name=f"u{round_}"))
        await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    store = SqliteStore(db_path)
    assert await store.names() == ["u0", "u1", "u2"]
    await store.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.names()
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    store = SqliteStore(db_path)
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        await store.get("u")
    await store.close()


async def test_corrupt_file(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database, just bytes " * 200)
    store = SqliteStore(db_path)
    with pytest.raises(StoreUnavailable, match="not a database"):
        await store.get("u")
    await store.close()


async def test_dropped_table(store: SqliteStore, db_path: Path) -> None:
    await store.add(Account(name="u"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE users")
    with pytest.raises(StoreUnavailable, match="no such table"):
        await store.get("u")
    with pytest.raises(StoreUnavailable):  # stays unavailable, does not crash
        await store.names()


async def test_malformed_row_names_no_secret(store: SqliteStore, db_path: Path) -> None:
    await store.add(FULL)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE users SET scram_sha256 = 'SCRAM-SHA-256$not-a-secret-XYZZY'")
    with pytest.raises(StoreUnavailable) as info:
        await store.get(FULL.name)
    assert "XYZZY" not in str(info.value)
    assert "malformed" in str(info.value)


async def test_lock_held_past_timeout_then_heals(store: SqliteStore, db_path: Path) -> None:
    await store.add(Account(name="before"))
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("INSERT INTO users (name, created, updated) VALUES ('x', '', '')")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.add(Account(name="blocked"))
        assert 0.15 < time.monotonic() - started < 3
        other.execute("ROLLBACK")
    finally:
        other.close()
    await store.add(Account(name="after"))
    assert await store.names() == ["after", "before"]


async def test_lock_at_first_open(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    other = sqlite3.connect(db_path, isolation_level=None)
    store = SqliteStore(db_path, timeout=0.1)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("CREATE TABLE squatter (x)")
        with pytest.raises(StoreUnavailable):
            await store.get("u")
        other.execute("COMMIT")
        assert await store.get("u") is None
    finally:
        other.close()
        await store.close()


async def test_unusable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = SqliteStore(tmp_path / "file" / "users.db")
    with pytest.raises(StoreUnavailable):
        await store.get("u")
    await store.close()


# ---------------------------------------------------------------- open_store


def test_open_store_relative_and_absolute(tmp_path: Path) -> None:
    relative = open_store("sqlite:///users.db", tmp_path)
    assert isinstance(relative, SqliteStore)
    assert repr(relative) == f"SqliteStore({str(tmp_path / 'users.db')!r})"
    absolute = open_store(f"sqlite:///{tmp_path}/abs/users.db", Path("/elsewhere"))
    assert isinstance(absolute, SqliteStore)
    assert repr(absolute) == f"SqliteStore({str(tmp_path / 'abs' / 'users.db')!r})"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db.example/users", "'postgresql'"),
        ("users.db", "no scheme"),
        ("sqlite://users.db", "sqlite:///FILE"),
        ("sqlite:///", "sqlite:///FILE"),
    ],
)
def test_open_store_refuses(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, tmp_path)


# ---------------------------------------------------------------- accounts kept between reads


async def test_an_unchanged_file_answers_get_without_the_worker_thread(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.add(FULL)
    for _ in range(2):  # the first read opens the probe, the next ones are kept
        assert await store.get(FULL.name) == FULL
        assert await store.get("nobody") is None
    reads: list[str] = []
    real_run = store._run

    async def counting_run(work):  # type: ignore[no-untyped-def]
        reads.append("thread")
        return await real_run(work)

    monkeypatch.setattr(store, "_run", counting_run)
    assert await store.get(FULL.name) == FULL
    assert await store.get("nobody") is None
    assert reads == []


async def test_a_change_by_any_connection_is_seen_at_the_next_get(
    store: SqliteStore, db_path: Path
) -> None:
    """Another worker, or the smtpgate command: another connection to the same file."""
    await store.add(FULL)
    assert await store.get(FULL.name) == FULL
    assert await store.get(FULL.name) == FULL  # now kept
    other = SqliteStore(db_path, timeout=0.2)
    try:
        await other.replace(dataclasses.replace(FULL, disabled=True))
        assert (await store.get(FULL.name)) == dataclasses.replace(FULL, disabled=True)
        await other.delete(FULL.name)
        assert await store.get(FULL.name) is None
        await other.add(Account(name="carol"))
        assert await store.get("carol") == Account(name="carol")
    finally:
        await other.close()
    await store.add(FULL)  # this store's own writes count too
    assert await store.get(FULL.name) == FULL
    await store.replace(dataclasses.replace(FULL, disabled=True))
    assert (await store.get(FULL.name)) == dataclasses.replace(FULL, disabled=True)
