"""The ``smtpgate`` command (README.md, "Managing users" and "Configuration").

Theory of operation
-------------------
``main`` parses the arguments, loads the configuration once (``--config``,
else ``$SMTPGATE_CONFIG``, else ``./smtpgate.toml``, else built-in defaults)
and runs one handler. Handlers raise ``CliError`` for anything the user can
fix; ``main`` prints it as one line on stderr. Exit codes:

    0  success
    1  bad input other than the config: unknown user, user exists, unreadable
       import file, passwords that do not match, the store failing
    2  a config error (one line: FILE: KEY: reason) or a command-line usage error
    130 interrupted at a prompt

User commands open the credential store named by ``[store] url`` and call
``smtpgate.credentials.users``; each of those validates everything before it
writes, so a refused command changes nothing: new names must be ones every
mechanism can carry, and ``user import`` checks every line (hash work factors
against the ``[import]`` limits too) before it stores any. Passwords come from
a twice-asked ``getpass`` prompt on a terminal, or from exactly one line of
standard input with ``--password-stdin`` (the line ending, LF or CRLF, is
removed; nothing else). No password, hash or secret is ever printed.

``serve`` imports the server lazily, so every other command works without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from smtpgate.cli import store as store_commands
from smtpgate.cli.common import (
    EXIT_CONFIG_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USER_ERROR,
    CliError,
    comma_list,
    cram_md5_enabled,
    mechanism_order,
    warn_disabled,
    with_store,
)
from smtpgate.cli.device import add_device_parsers
from smtpgate.cli.queue import add_queue_parsers
from smtpgate.config.load import BUILTIN, ConfigError, find_config_path, load_config
from smtpgate.config.schema import Config
from smtpgate.sasl.base import SecretScheme

if TYPE_CHECKING:
    from smtpgate.credentials.base import Account, CredentialStore

T = TypeVar("T")
Handler = Callable[[argparse.Namespace, Config], int]

class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit status 2 (README.md, "Managing users")."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG_ERROR, f"{self.prog}: {message} (try --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Run one ``smtpgate`` command; the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG_ERROR
    del parser  # ~0.4 MiB that ``serve`` would otherwise keep, in every worker too
    args.source = find_config_path(args.config)
    try:
        config = load_config(args.source)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG_ERROR)
    handler: Handler = args.handler
    try:
        return handler(args, config)
    except CliError as exc:
        return _fail(f"smtpgate: {exc}", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return _fail("smtpgate: interrupted", EXIT_INTERRUPTED)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smtpgate", description="Authenticated SMTP submission server.")
    parser.add_argument("--config", type=Path, metavar="FILE", help="the TOML config file")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.set_defaults(handler=cmd_serve)
    check = commands.add_parser("check-config", help="validate the configuration")
    check.set_defaults(handler=cmd_check_config)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True, metavar="ACTION"
    )
    add = user.add_parser("add", help="create a user")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read one line from stdin")
    add.add_argument("--allow-mechanisms", metavar="M1,M2", type=comma_list)
    add.add_argument("--may-act-as", metavar="ID1,ID2", type=comma_list, default=[])
    add.add_argument("--address", action="append", default=[], metavar="ADDR",
                     help="a sender address (repeat), enforced with [auth] enforce_sender")
    add.set_defaults(handler=cmd_user_add)
    passwd = user.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true", help="read one line from stdin")
    passwd.set_defaults(handler=cmd_user_passwd)
    delete = user.add_parser("del", help="delete a user")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=cmd_user_del)
    listing = user.add_parser("list", help="list users and their mechanism restrictions")
    listing.set_defaults(handler=cmd_user_list)
    imports = user.add_parser("import", help="import a Dovecot passwd-file")
    imports.add_argument("file", metavar="FILE", type=Path)
    imports.set_defaults(handler=cmd_user_import)
    add_device_parsers(commands)
    store_commands.register(commands)
    add_queue_parsers(commands)  # queue, relay test, oauth authorize (docs/relay.md)

    from smtpgate.cli import admin  # admin add, admin del

    admin.register(commands, read_password)
    return parser


def _fail(message: str, status: int) -> int:
    print(" ".join(message.split()), file=sys.stderr)
    return status


# -- serve and check-config -----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    # Imported here so that the user commands never load the server (sockets, TLS,
    # OpenSSL).
    from smtpgate.server.run import serve

    return serve(config, args.source)


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    """The config parses, and serve's start-up checks pass (paths, TLS pair): nothing
    is created, no port is bound (a running server holds them)."""
    from smtpgate.ops.reload import describe as describe_reload
    from smtpgate.server.preflight import StartupError, check

    try:
        check(config)
    except StartupError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.source if args.source is not None else BUILTIN}: OK")
    for listener in config.listeners:
        auth = "true" if listener.require_auth else "false"
        print(f"listener {listener.address} tls={listener.tls} require_auth={auth}")
    for line in describe_reload(config):
        print(line)
    return EXIT_OK


# -- user commands ----------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.users import add_user

    warn_disabled(args.allow_mechanisms, config)
    password = read_password(args.password_stdin)
    account = with_store(
        config,
        lambda store: add_user(
            store,
            args.name,
            password,
            allow_mechanisms=args.allow_mechanisms,
            may_act_as=args.may_act_as,
            cram_md5=cram_md5_enabled(config),
            addresses=args.address,
        ),
    )
    print(f"added user {account.name}")
    return EXIT_OK


def cmd_user_passwd(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.users import prepare_name, set_password

    name = _checked(prepare_name, args.name)
    with_store(config, lambda store: _require_user(store, name))  # before asking
    password = read_password(args.password_stdin)
    with_store(
        config, lambda store: set_password(store, name, password, cram_md5=cram_md5_enabled(config))
    )
    print(f"password changed for {name}")
    return EXIT_OK


def cmd_user_del(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.users import delete_user

    with_store(config, lambda store: delete_user(store, args.name))
    print(f"deleted user {args.name}")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.users import list_users

    for account in with_store(config, list_users):
        print(describe_account(account))
    return EXIT_OK


def cmd_user_import(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.users import import_passwd_file

    limits = dataclasses.asdict(config.import_)
    count = with_store(config, lambda store: import_passwd_file(store, args.file, limits=limits))
    print(f"imported {count} user{'' if count == 1 else 's'} from {args.file}")
    return EXIT_OK


def describe_account(account: Account) -> str:
    """``name<TAB>mechanisms=...<TAB>may-act-as=...<TAB>credentials=...``, no secrets."""
    if account.allowed_mechanisms is None:
        mechanisms = "any"
    else:
        mechanisms = ",".join(mechanism_order(account.allowed_mechanisms))
    acts = ",".join(sorted(account.may_act_as)) or "-"
    held: list[str] = []
    if account.password_hash is not None:
        held.append(account.password_hash[1:].partition("}")[0] or "password")
    held += [s for s in SecretScheme if account.secret_for(s)]
    return (
        f"{account.name}\tmechanisms={mechanisms}\tmay-act-as={acts}"
        f"\tcredentials={','.join(held) or '-'}"
    )


def _checked(function: Callable[[str], T], value: str) -> T:
    try:
        return function(value)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def _require_user(store: CredentialStore, name: str) -> None:
    from smtpgate.credentials.base import UnknownUser

    if await store.get(name) is None:
        raise UnknownUser(name)


# -- passwords ------------------------------------------------------------------------------


def read_password(from_stdin: bool) -> str:
    """One line of stdin, or a password asked twice on the terminal; never empty."""
    password = _stdin_line() if from_stdin else _prompt_twice()
    if not password:
        raise CliError("empty password refused")
    return password


def _stdin_line() -> str:
    stream = sys.stdin
    if stream is None:
        raise CliError("--password-stdin: there is no standard input")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        try:
            line = buffer.readline().decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("--password-stdin: the password is not valid UTF-8") from None
    else:
        line = stream.readline()
    return _strip_line_end(line)


def _strip_line_end(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


def _prompt_twice() -> str:
    if sys.stdin is None or not sys.stdin.isatty():
        raise CliError("standard input is not a terminal; use --password-stdin")
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password (again): ")
    except EOFError:
        raise CliError("no password given") from None
    if first != second:
        raise CliError("the passwords do not match")
    return first


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m smtpgate.cli.main``."""
    sys.exit(main(list(argv) if argv is not None else None))


if __name__ == "__main__":
    run()
