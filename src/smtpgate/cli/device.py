"""``smtpgate device ...``: device accounts (docs/device-accounts.md).

Theory of operation
-------------------
Each handler opens the store through ``cli/common.py`` and calls one
function of ``credentials/device_admin.py``, which checks all input before
it writes: a refused command prints one line on stderr, exits 1 and changes
nothing (a usage error exits 2, as for every command).

``add`` and ``rotate`` print the generated password once, alone on the last
line of standard output, so a script can take it with ``tail -n 1``; it is
never stored, logged or shown again. The other output never holds a secret.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from smtpgate.cli.common import (
    EXIT_OK,
    comma_list,
    cram_md5_enabled,
    mechanism_order,
    warn_disabled,
    with_store,
)
from smtpgate.config.schema import Config

if TYPE_CHECKING:
    from smtpgate.credentials.base import Account

__all__ = ["add_device_parsers"]


def add_device_parsers(commands: Any) -> None:
    """Register ``device`` and its actions on the top-level subparsers."""
    device = commands.add_parser("device", help="manage device accounts").add_subparsers(
        dest="device_command", required=True, metavar="ACTION"
    )
    add = device.add_parser("add", help="create a device account; prints its password")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--sender", action="append", required=True, metavar="ADDR|*@DOMAIN",
                     help="an envelope sender it may use (repeat for more)")
    add.add_argument("--network", action="append", default=[], metavar="CIDR",
                     help="a network it may log in from (repeat; none: anywhere)")
    add.add_argument("--max-per-day", type=int, metavar="N", help="messages per UTC day")
    add.add_argument("--expires", metavar="YYYY-MM-DD", help="the last UTC day it may log in")
    add.add_argument("--mechanisms", action="extend", type=comma_list, metavar="M1,M2",
                     help="the SASL mechanisms it may use (default: every enabled one)")
    add.set_defaults(handler=cmd_device_add)
    device.add_parser("list", help="list device accounts").set_defaults(handler=cmd_device_list)
    for action, handler, text in (
        ("show", cmd_device_show, "show one device account"),
        ("revoke", cmd_device_revoke, "delete a device account"),
        ("rotate", cmd_device_rotate, "give a device a new password; prints it"),
        ("disable", cmd_device_disable, "refuse the device's logins until enabled"),
        ("enable", cmd_device_enable, "allow the device's logins again"),
    ):
        parser = device.add_parser(action, help=text)
        parser.add_argument("name", metavar="NAME")
        parser.set_defaults(handler=handler)


def cmd_device_add(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.device_admin import PASSWORD_BITS, DeviceSpec, add_device

    warn_disabled(args.mechanisms, config)
    spec = DeviceSpec(args.sender, args.network, args.max_per_day, args.expires, args.mechanisms)
    account, password = with_store(
        config, lambda store: add_device(store, args.name, spec, cram_md5=cram_md5_enabled(config))
    )
    print(f"added device {account.name}; its password ({PASSWORD_BITS} bits) is shown once:")
    print(password)
    return EXIT_OK


def cmd_device_rotate(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.device_admin import rotate_device

    password = with_store(
        config, lambda store: rotate_device(store, args.name, cram_md5=cram_md5_enabled(config))
    )
    print(f"new password for device {args.name}, shown once (the old one no longer works):")
    print(password)
    return EXIT_OK


def cmd_device_list(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.device_admin import list_devices

    for account in with_store(config, list_devices):
        print("\t".join(f"{key}={value}" if key else value for key, value in _fields(account)))
    return EXIT_OK


def cmd_device_show(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.device_admin import get_device

    account = with_store(config, lambda store: get_device(store, args.name))
    for key, value in _fields(account):
        print(f"{key or 'name'}: {value}")
    return EXIT_OK


def cmd_device_revoke(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.credentials.device_admin import revoke_device

    with_store(config, lambda store: revoke_device(store, args.name))
    print(f"revoked device {args.name}")
    return EXIT_OK


def cmd_device_disable(args: argparse.Namespace, config: Config) -> int:
    return _switch(args, config, disabled=True)


def cmd_device_enable(args: argparse.Namespace, config: Config) -> int:
    return _switch(args, config, disabled=False)


def _switch(args: argparse.Namespace, config: Config, *, disabled: bool) -> int:
    from smtpgate.credentials.device_admin import set_disabled

    with_store(config, lambda store: set_disabled(store, args.name, disabled))
    print(f"{'disabled' if disabled else 'enabled'} device {args.name}")
    return EXIT_OK


def _fields(account: Account) -> list[tuple[str, str]]:
    """What an administrator needs to see about a device; never a secret."""
    today = datetime.now(UTC).date()
    if account.disabled:
        state = "disabled"
    elif account.expires is not None and today > account.expires:
        state = "expired"
    else:
        state = "active"
    mechanisms = account.allowed_mechanisms
    return [
        ("", account.name),
        ("state", state),
        ("senders", ",".join(account.senders) or "-"),
        ("networks", ",".join(account.networks) or "any"),
        ("max-per-day", "unlimited" if account.max_per_day is None else str(account.max_per_day)),
        ("expires", "never" if account.expires is None else account.expires.isoformat()),
        ("mechanisms", "any" if mechanisms is None else ",".join(mechanism_order(mechanisms))),
    ]
