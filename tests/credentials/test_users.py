"""The admin API on a real SQLite store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpgate.config.schema import ImportConfig
from smtpgate.credentials.base import Account, UnknownUser, UserExists
from smtpgate.credentials.passwd_file import PasswdFileError
from smtpgate.credentials.passwords import needs_rehash, verify_account_password
from smtpgate.credentials.sqlite import SqliteStore
from smtpgate.credentials.users import (
    add_user,
    delete_user,
    import_passwd_file,
    list_users,
    set_password,
)
from smtpgate.sasl.cram_md5 import cram_md5_secret
from smtpgate.sasl.scram import verify_password_with_scram

LIMITS = dataclasses.asdict(ImportConfig())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "users.db")
    yield store
    await store.close()


async def test_add_user_stores_every_secret(store: SqliteStore) -> None:
    await add_user(
        store,
        "I\u00adX",
        "pencil",
        allow_mechanisms=["scram-sha-256", "PLAIN "],
        may_act_as=["sales@example.org"],
        cram_md5=True,
    )
    account = await store.get("IX")  # the name is SASLprepped
    assert account is not None
    assert account.password_hash is not None and not needs_rehash(account.password_hash)
    assert verify_account_password(account, "pencil")
    assert account.scram_sha1 is not None and account.scram_sha256 is not None
    assert verify_password_with_scram("SCRAM-SHA-1", account.scram_sha1, "pencil")
    assert verify_password_with_scram("SCRAM-SHA-256", account.scram_sha256, "pencil")
    assert account.cram_md5 == cram_md5_secret("pencil")
    assert account.allowed_mechanisms == frozenset({"SCRAM-SHA-256", "PLAIN"})
    assert account.may_act_as == frozenset({"sales@example.org"})
    with pytest.raises(UserExists):
        await add_user(store, "IX", "other", allow_mechanisms=None, may_act_as=[], cram_md5=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad\x00name"}, "user name"),
        ({"name": "\u00ad"}, "user name is empty"),
        ({"name": " "}, "only white space"),
        ({"name": "a:b"}, "':'"),
        ({"name": "x" * 5000}, "5000 octets long; at most 255"),
        ({"name": "line\nbreak"}, "control character"),
        ({"password": "pass\x00word"}, "NUL, which SASL PLAIN"),
        ({"password": ""}, "password is empty"),
        ({"allow_mechanisms": ["PLAIN", "GSSAPI"]}, "unknown mechanism.*GSSAPI"),
        ({"allow_mechanisms": []}, "at least one"),
        ({"may_act_as": ["a,b"]}, "authorization identity"),
        ({"may_act_as": [""]}, "authorization identity"),
        ({"allow_mechanisms": ["ntlm", "Plain"]}, "unknown mechanism.*NTLM"),
    ],
)
async def test_add_user_refuses_bad_input(
    store: SqliteStore, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "name": "u",
        "password": "pw",
        "allow_mechanisms": ["PLAIN"],
        "may_act_as": [],
        "cram_md5": False,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        await add_user(store, **arguments)  # type: ignore[arg-type]
    assert await store.names() == []


async def test_set_password_replaces_every_secret(store: SqliteStore) -> None:
    old = await add_user(
        store, "u", "old-pw", allow_mechanisms=["PLAIN"], may_act_as=["x"], cram_md5=True
    )
    await set_password(store, "u", "new-pw", cram_md5=False)
    new = await store.get("u")
    assert new is not None
    assert new.cram_md5 is None  # the old password's CRAM-MD5 secret is gone
    assert new.scram_sha1 is not None and new.scram_sha256 is not None
    assert not verify_password_with_scram("SCRAM-SHA-256", new.scram_sha256, "old-pw")
    assert verify_password_with_scram("SCRAM-SHA-256", new.scram_sha256, "new-pw")
    assert verify_password_with_scram("SCRAM-SHA-1", new.scram_sha1, "new-pw")
    assert new.password_hash != old.password_hash
    assert (new.allowed_mechanisms, new.may_act_as) == (frozenset({"PLAIN"}), frozenset({"x"}))


async def test_set_password_unknown_user(store: SqliteStore) -> None:
    with pytest.raises(UnknownUser):
        await set_password(store, "nobody", "pw", cram_md5=False)


async def test_delete_and_list(store: SqliteStore) -> None:
    await store.add_many([Account(name="b"), Account(name="a", may_act_as=frozenset({"z"}))])
    assert [account.name for account in await list_users(store)] == ["a", "b"]
    await delete_user(store, "a")
    assert await list_users(store) == [Account(name="b")]
    with pytest.raises(UnknownUser):
        await delete_user(store, "a")


async def test_import(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# users\nalice:{PLAIN}one\nbob:{PLAIN}two:1000:1000\n")
    assert await import_passwd_file(store, path, limits=LIMITS) == 2
    alice = await store.get("alice")
    assert alice is not None and verify_account_password(alice, "one")
    assert await store.names() == ["alice", "bob"]


async def test_import_bad_line_stores_nothing(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\nbob:{NOPE}two\n")
    with pytest.raises(PasswdFileError, match="line 2"):
        await import_passwd_file(store, path, limits=LIMITS)
    assert await store.names() == []


async def test_import_existing_user_stores_nothing(store: SqliteStore, tmp_path: Path) -> None:
    await store.add(Account(name="bob"))
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\nbob:{PLAIN}two\ncarol:{PLAIN}three\n")
    with pytest.raises(UserExists):
        await import_passwd_file(store, path, limits=LIMITS)
    assert await store.names() == ["bob"]
    assert await store.get("bob") == Account(name="bob")


async def test_names_stored_before_the_rules_can_still_be_removed(store: SqliteStore) -> None:
    await store.add_many([Account(name="a:b"), Account(name="x" * 300)])
    await set_password(store, "a:b", "new-pw", cram_md5=False)  # lookups stay lenient
    await delete_user(store, "a:b")
    await delete_user(store, "x" * 300)
    assert await store.names() == []
