"""``smtpgate admin add NAME [--password-stdin]`` and ``smtpgate admin del NAME``.

Admin accounts log in to the admin page (docs/admin.md); they live in the
credential store's own table, apart from SMTP users. The password is read
like ``user add`` reads one and stored as Argon2id. ``cli.main`` imports
this module and hands ``register`` its password reader and its error type
(printed as one line, exit 1), so nothing here imports ``cli.main``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from smtpgate.admin.accounts import AdminAccounts, add_admin, delete_admin
from smtpgate.config.schema import Config
from smtpgate.credentials.base import StoreUnavailable, UnknownUser, UserExists
from smtpgate.credentials.open import open_store

T = TypeVar("T")
EXIT_OK = 0
PasswordReader = Callable[[bool], str]  # --password-stdin -> the password


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    read_password: PasswordReader,
    user_error: type[Exception],
) -> None:
    admin = commands.add_parser("admin", help="manage admin page accounts").add_subparsers(
        dest="admin_command", required=True, metavar="ACTION"
    )
    add = admin.add_parser("add", help="create an admin account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read one line from stdin")
    add.set_defaults(handler=functools.partial(cmd_admin_add, read_password, user_error))
    delete = admin.add_parser("del", help="delete an admin account")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=functools.partial(cmd_admin_del, user_error))


def cmd_admin_add(
    read_password: PasswordReader, error: type[Exception], args: argparse.Namespace,
    config: Config,
) -> int:
    password = read_password(args.password_stdin)
    name = _run(config, error, lambda store: add_admin(store, args.name, password))
    print(f"added admin {name}")
    return EXIT_OK


def cmd_admin_del(error: type[Exception], args: argparse.Namespace, config: Config) -> int:
    _run(config, error, lambda store: delete_admin(store, args.name))
    print(f"deleted admin {args.name}")
    return EXIT_OK


def _run(
    config: Config, error: type[Exception], action: Callable[[AdminAccounts], Awaitable[T]]
) -> T:
    """Open the store, run ``action``, close it; what the user can fix -> ``error``."""
    async def run() -> T:
        store = open_store(config.store.url, config.data_dir)
        try:
            if not isinstance(store, AdminAccounts):
                raise ValueError("this credential store cannot hold admin accounts")
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except UnknownUser as exc:
        raise error(f"unknown admin {exc}") from None
    except UserExists as exc:
        raise error(f"admin {exc} already exists; nothing changed") from None
    except StoreUnavailable as exc:
        raise error(f"store unavailable: {exc}") from None
    except ValueError as exc:
        raise error(str(exc)) from None
