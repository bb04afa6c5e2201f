"""``smtpgate store migrate --from URL --to URL``: copy every account to a new store.

Theory of operation
-------------------
The source (any store URL ``[store] url`` accepts: ``sqlite:///...`` relative
to ``data_dir``, or ``postgresql://...``) is read whole: every account with
all its secrets and policies, and the key behind unknown users' fake secrets
(so an unknown name gets the same fake SCRAM salt before and after, RFC 5802
section 9). The destination must be a PostgreSQL store: its schema is
brought up to date, then everything is written in one transaction
(``PostgresStore.copy_in``), so a name that already exists there, or any
failure half-way, leaves it unchanged. The source is never written, except
that a source without a fake-secret key gets one (the key it would make at
its next AUTH anyway).

Run it before the instances on the new store start: they read the key once.
URLs are never printed (a PostgreSQL URL may hold a password).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from smtpgate.config.schema import Config

if TYPE_CHECKING:
    from smtpgate.credentials.base import Account, CredentialStore

__all__ = ["cmd_store_migrate", "register"]

EXIT_OK = 0
EXIT_USER_ERROR = 1


def register(commands: Any) -> None:
    """Add ``store migrate`` to the ``smtpgate`` sub-command parser ``commands``."""
    store = commands.add_parser("store", help="manage the credential store").add_subparsers(
        dest="store_command", required=True, metavar="ACTION"
    )
    migrate = store.add_parser("migrate", help="copy every account to a PostgreSQL store")
    migrate.add_argument("--from", dest="from_url", required=True, metavar="URL")
    migrate.add_argument("--to", dest="to_url", required=True, metavar="URL")
    migrate.set_defaults(handler=cmd_store_migrate)


def cmd_store_migrate(args: argparse.Namespace, config: Config) -> int:
    """Exit 0 with one line on stdout, or 1 with one line on stderr (as ``cli/main.py``)."""
    import asyncio

    from smtpgate.credentials.base import StoreUnavailable, UserExists

    try:
        count = asyncio.run(migrate(args.from_url, args.to_url, config))
    except UserExists as exc:
        return _fail(f"user {exc} already exists in the destination; nothing copied")
    except StoreUnavailable as exc:
        return _fail(f"store unavailable: {exc}; nothing copied")
    except ValueError as exc:  # a URL no store accepts
        return _fail(str(exc))
    print(f"copied {count} user{'' if count == 1 else 's'} and the fake-secret key")
    return EXIT_OK


def _fail(message: str) -> int:
    print("smtpgate: " + " ".join(message.split()), file=sys.stderr)
    return EXIT_USER_ERROR


async def migrate(source_url: str, target_url: str, config: Config) -> int:
    """Copy every account and the fake-secret key; the number of accounts copied."""
    import asyncio

    from smtpgate.credentials.open import open_store
    from smtpgate.credentials.postgres import PostgresStore
    from smtpgate.credentials.sqlite import SqliteStore

    target = open_store(target_url, config.data_dir)
    if not isinstance(target, PostgresStore):
        await target.close()
        raise ValueError("store migrate: --to must be a postgresql:// URL")
    source = open_store(source_url, config.data_dir)
    if isinstance(source, SqliteStore) and not source._path.exists():
        # Opening would create an empty store and "copy" nothing: a typo, surely.
        await asyncio.gather(source.close(), target.close())
        raise ValueError(f"store migrate: --from: {source._path}: no such file")
    try:
        accounts = await read_all(source)
        key = await source.fake_secret_key()
        await target.copy_in(accounts, key)
    finally:
        await source.close()
        await target.close()
    return len(accounts)


async def read_all(store: CredentialStore) -> list[Account]:
    """Every account, in name order; one deleted while we read is left out."""
    accounts: list[Account] = []
    for name in await store.names():
        account = await store.get(name)
        if account is not None:
            accounts.append(account)
    return accounts
