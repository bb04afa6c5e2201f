"""update_secrets(if_hash=...): the password transition never overwrites a newer password."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpgate.credentials.base import Account, SecretsUpdate, StaleAccount, UnknownUser
from smtpgate.credentials.sqlite import SqliteStore


async def test_conditional_update_writes_only_while_hash_unchanged(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "users.db")
    try:
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
    finally:
        await store.close()


async def test_conditional_update_on_account_without_hash(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "users.db")
    try:
        await store.add(Account("carol"))
        await store.update_secrets("carol", SecretsUpdate(password_hash="{PLAIN}x"), if_hash=None)
        account = await store.get("carol")
        assert account is not None and account.password_hash == "{PLAIN}x"
    finally:
        await store.close()
