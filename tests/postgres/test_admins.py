"""Admin page accounts on the PostgreSQL store: the same contract as on SQLite
(src/smtpgate/admin/accounts.py), on a real server."""

from __future__ import annotations

import pytest

from smtpgate.admin.accounts import AdminAccounts, add_admin, check_login, delete_admin
from smtpgate.credentials.base import UnknownUser, UserExists
from smtpgate.credentials.postgres import SCHEMA_VERSION, PostgresStore


async def test_admin_accounts(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        assert isinstance(store, AdminAccounts)
        assert await add_admin(store, "root", "admin pw") == "root"
        with pytest.raises(UserExists):
            await add_admin(store, "root", "other")
        assert await check_login(store, "root", "admin pw") == "root"
        assert await check_login(store, "root", "other") is None
        assert await check_login(store, "nobody", "admin pw") is None
        assert await store.admin_hash("bad\0name") is None  # PostgreSQL text holds no NUL
        assert await store.get("root") is None  # an admin is no SMTP user
        await delete_admin(store, "root")
        with pytest.raises(UnknownUser):
            await delete_admin(store, "root")
        assert await store.admin_hash("root") is None
        assert SCHEMA_VERSION == 4
    finally:
        await store.close()
