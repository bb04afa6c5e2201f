"""``smtpgate admin add NAME [--password-stdin]`` and ``smtpgate admin del NAME``.

Admin accounts log in to the admin page (docs/admin.md); they live in the
credential store's own table, apart from SMTP users. The password is read
like ``user add`` reads one and stored as Argon2id. ``cli.main`` imports
this module and hands ``register`` its password reader, so nothing here
imports ``cli.main``; errors are ``cli.common``'s (one line, exit 1).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from smtpgate.cli.common import with_store
from smtpgate.config.schema import Config

if TYPE_CHECKING:  # imported by the commands: ``smtpgate serve`` builds this parser too
    from smtpgate.admin.accounts import AdminAccounts
    from smtpgate.credentials.base import CredentialStore

T = TypeVar("T")
EXIT_OK = 0
PasswordReader = Callable[[bool], str]  # --password-stdin -> the password


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    read_password: PasswordReader,
) -> None:
    admin = commands.add_parser("admin", help="manage admin page accounts").add_subparsers(
        dest="admin_command", required=True, metavar="ACTION"
    )
    add = admin.add_parser("add", help="create an admin account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read one line from stdin")
    add.set_defaults(handler=functools.partial(cmd_admin_add, read_password))
    delete = admin.add_parser("del", help="delete an admin account")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=cmd_admin_del)


def cmd_admin_add(
    read_password: PasswordReader, args: argparse.Namespace, config: Config
) -> int:
    from smtpgate.admin.accounts import add_admin

    password = read_password(args.password_stdin)
    name = _run(config, lambda store: add_admin(store, args.name, password))
    print(f"added admin {name}")
    return EXIT_OK


def cmd_admin_del(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.admin.accounts import delete_admin

    _run(config, lambda store: delete_admin(store, args.name))
    print(f"deleted admin {args.name}")
    return EXIT_OK


def _run(config: Config, action: Callable[[AdminAccounts], Awaitable[T]]) -> T:
    """``action`` on the store, which must hold admin accounts; errors -> CliError."""
    from smtpgate.admin.accounts import AdminAccounts

    async def on_admins(store: CredentialStore) -> T:
        if not isinstance(store, AdminAccounts):
            raise ValueError("this credential store cannot hold admin accounts")
        return await action(store)

    return with_store(config, on_admins, kind="admin")
