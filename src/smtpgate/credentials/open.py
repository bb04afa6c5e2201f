"""Open the credential store a config's ``[store] url`` names.

``sqlite:///...`` is the SQLite store (``credentials/sqlite.py``; relative
paths are under ``data_dir``); ``postgresql://...`` or ``postgres://...`` is
the PostgreSQL store (``credentials/postgres.py``), imported only when used
so that SQLite users never load psycopg.
"""

from __future__ import annotations

from pathlib import Path

from smtpgate.credentials import sqlite
from smtpgate.credentials.base import CredentialStore

__all__ = ["open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, data_dir: Path) -> CredentialStore:
    """The store for ``url``; ValueError for a URL neither store accepts."""
    if url.lower().startswith(POSTGRES_SCHEMES):
        from smtpgate.credentials.postgres import PostgresStore

        return PostgresStore(url)
    return sqlite.open_store(url, data_dir)
