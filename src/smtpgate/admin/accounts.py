"""Admin accounts: who may log in to the admin page (``smtpgate admin add NAME``).

Admins live in their own table of the credential store, apart from SMTP
users: an admin name is never an SMTP login and the reverse. Their passwords
are Argon2id hashes made by ``credentials.passwords`` like every other.
``check_login`` costs the same for an unknown name as for a wrong password
(a dummy Argon2id verify), so timing does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, runtime_checkable

from smtpgate.credentials.passwd_file import prepare_name, prepare_new_name
from smtpgate.credentials.passwords import hash_password, verify_dummy, verify_password

MAX_PASSWORD = 1024  # characters: a longer one is refused before hashing


@runtime_checkable
class AdminAccounts(Protocol):
    """What the credential store offers for admins (``credentials/sqlite.py``)."""

    async def add_admin(self, name: str, password_hash: str) -> None: ...

    async def admin_hash(self, name: str) -> str | None: ...

    async def delete_admin(self, name: str) -> None: ...


async def add_admin(store: AdminAccounts, name: str, password: str) -> str:
    """Create an admin; the prepared name. ValueError for a bad name or password,
    UserExists if taken."""
    prepared = prepare_new_name(name)
    if not password or len(password) > MAX_PASSWORD:
        raise ValueError(f"the password must have 1 to {MAX_PASSWORD} characters")
    await store.add_admin(prepared, await asyncio.to_thread(hash_password, password))
    return prepared


async def delete_admin(store: AdminAccounts, name: str) -> None:
    """Remove an admin; UnknownUser if absent."""
    await store.delete_admin(prepare_name(name))


async def check_login(store: AdminAccounts, name: str, password: str) -> str | None:
    """The admin's prepared name if ``password`` is right, else None (same cost)."""
    stored: str | None = None
    prepared = ""
    with contextlib.suppress(ValueError):  # no such admin can exist: the same dummy work
        prepared = prepare_name(name)
    if prepared and len(password) <= MAX_PASSWORD:
        stored = await store.admin_hash(prepared)
    if stored is None:
        await asyncio.to_thread(verify_dummy, password[:MAX_PASSWORD])
        return None
    return prepared if await asyncio.to_thread(verify_password, stored, password) else None
