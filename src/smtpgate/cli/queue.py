"""``smtpgate queue ...``, ``smtpgate relay test`` and ``smtpgate oauth authorize``.

Theory of operation
-------------------
``add_queue_parsers`` registers the three command groups on the main parser;
each handler takes ``(args, config)`` like the others in ``cli.main`` and
raises ``CliError`` (``cli.common``: one line on stderr, exit 1) for
anything the user can fix: an unknown queue id, an entry that is being
delivered, an unknown account.

The queue commands work on ``<data_dir>/queue/`` directly and are safe
while the server runs (``relay.admin`` claims each entry with the lock the
deliverers use and then tells them to rescan). ``queue list`` pages:
``--page N`` of ``--per-page`` lines (default 50), oldest first, one line
per message::

    ID  STATE  AGE  SIZE  <SENDER>  PENDING/ALL  LAST-ERROR

``relay test`` prints one line per step and exits 0 only if all passed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smtpgate.cli.common import EXIT_OK, EXIT_USER_ERROR, CliError
from smtpgate.config.durations import format_duration
from smtpgate.config.schema import Config

# The relay's modules (httpx among them) are imported by the commands that use them:
# ``smtpgate serve`` builds this parser too and must not load them (docs/performance.md).
if TYPE_CHECKING:
    from smtpgate.relay.entry import QueueEntry
    from smtpgate.relay.queue import QueueStore

PER_PAGE = 50


def add_queue_parsers(commands: Any) -> None:
    """Register ``queue``, ``relay`` and ``oauth`` on the main parser's subcommands."""
    queue = commands.add_parser("queue", help="inspect and manage the relay queue")
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list queued messages, oldest first")
    listing.add_argument("--page", type=_positive, default=1, metavar="N")
    listing.add_argument("--per-page", type=_positive, default=PER_PAGE, metavar="N")
    listing.set_defaults(handler=cmd_queue_list)
    show = actions.add_parser("show", help="show one message's envelope and state")
    show.add_argument("id", metavar="ID")
    show.set_defaults(handler=cmd_queue_show)
    retry = actions.add_parser("retry", help="try now")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", metavar="ID")
    target.add_argument("--all", action="store_true", help="every queued message")
    retry.set_defaults(handler=cmd_queue_retry)
    for name, help_text in (("hold", "keep it queued but do not try it"),
                            ("release", "undo hold and try now"),
                            ("delete", "remove it without a bounce"),
                            ("bounce", "give up now and send the sender a bounce")):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("id", metavar="ID")
        action.set_defaults(handler=cmd_queue_action, action=name)

    relay = commands.add_parser("relay", help="relay checks").add_subparsers(
        dest="relay_command", required=True, metavar="ACTION")
    test = relay.add_parser("test", help="check the relay set-up without sending mail")
    test.add_argument("account", nargs="?", metavar="ACCOUNT", help="an account's username")
    test.set_defaults(handler=cmd_relay_test)

    oauth = commands.add_parser("oauth", help="OAuth2 set-up").add_subparsers(
        dest="oauth_command", required=True, metavar="ACTION")
    authorize = oauth.add_parser("authorize", help="device-code sign-in; saves the refresh token")
    authorize.add_argument("account", metavar="ACCOUNT", help="the account's username")
    authorize.set_defaults(handler=cmd_oauth_authorize)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return int(text)


def _store(config: Config) -> QueueStore:
    from smtpgate.relay.queue import QUEUE_DIR, QueueStore

    return QueueStore(config.data_dir / QUEUE_DIR)


def _admin(call: Callable[[], Any]) -> Any:
    from smtpgate.relay import admin

    try:
        return call()
    except admin.AdminError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or 'queue'}: {exc.strerror or exc}") from None


# -- queue ----------------------------------------------------------------------------------


def describe(entry: QueueEntry, now: float) -> str:
    pending = len(entry.pending)
    error = " ".join(entry.last_error.split())[:120] or "-"
    return (f"{entry.id}  {entry.state}  {format_duration(max(1, round(now - entry.received_at)))}"
            f"  {entry.size}  <{entry.mail_from}>  {pending}/{len(entry.recipients)}  {error}")


def cmd_queue_list(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.relay import admin

    everything = _admin(lambda: list(admin.entries(_store(config))))
    start = (args.page - 1) * args.per_page
    page = everything[start:start + args.per_page]
    now = time.time()
    for entry in page:
        print(describe(entry, now))
    pages = max(1, -(-len(everything) // args.per_page))
    print(f"{len(everything)} message(s) queued; page {args.page} of {pages}")
    return EXIT_OK


def cmd_queue_show(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.relay import admin

    entry: QueueEntry = _admin(lambda: admin.load(_store(config), args.id))
    print(f"id: {entry.id}\nstate: {entry.state}\nfrom: <{entry.mail_from}>")
    print(f"received: {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.received_at))} UTC")
    print(f"size: {entry.size}\nattempts: {entry.attempts}")
    if entry.pending and not entry.held:
        wait = max(1, round(entry.next_attempt - time.time()))
        print(f"next attempt in: {format_duration(wait)}")
    print(f"last error: {entry.last_error or '-'}")
    for recipient in entry.recipients:
        print(f"to: <{recipient.address}> {recipient.status} {recipient.reply}".rstrip())
    return EXIT_OK


def cmd_queue_retry(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.relay import admin

    store = _store(config)
    if not args.all:
        _admin(lambda: admin.change(store, args.id, admin.retry))
        print(f"{args.id}: will be tried now")
        return EXIT_OK
    done, busy = 0, 0
    for entry in _admin(lambda: list(admin.entries(store))):
        try:
            admin.change(store, entry.id, admin.retry)
            done += 1
        except admin.AdminError:
            busy += 1  # being delivered right now, or gone meanwhile: nothing to do
    print(f"{done} message(s) will be tried now" + (f"; {busy} busy or gone" if busy else ""))
    return EXIT_OK


def cmd_queue_action(args: argparse.Namespace, config: Config) -> int:
    from smtpgate.relay import admin

    store = _store(config)
    if args.action == "delete":
        _admin(lambda: admin.delete(store, args.id))
        print(f"{args.id}: deleted")
        return EXIT_OK
    edit = {"hold": admin.hold, "release": admin.release, "bounce": admin.bounce}[args.action]
    _admin(lambda: admin.change(store, args.id, edit))
    done = {"hold": "held", "release": "released; will be tried now",
            "bounce": "failed; the sender gets a bounce"}[args.action]
    print(f"{args.id}: {done}")
    return EXIT_OK


# -- relay test and oauth authorize ---------------------------------------------------------


def cmd_relay_test(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from smtpgate.relay.relaytest import find_account, run_checks

    if not config.relay.host:
        raise CliError("[relay] host is not set")
    try:
        account = find_account(config, args.account)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ok = asyncio.run(run_checks(config, account, lambda line: print(line, flush=True)))
    return EXIT_OK if ok else EXIT_USER_ERROR


def cmd_oauth_authorize(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from smtpgate.relay.device import authorize
    from smtpgate.relay.oauth import TokenError
    from smtpgate.relay.relaytest import find_account

    try:
        account = find_account(config, args.account)
        path = asyncio.run(authorize(account, lambda line: print(line, flush=True)))
    except (ValueError, TokenError) as exc:
        raise CliError(str(exc)) from None
    print(f"saved the refresh token to {path}")
    return EXIT_OK
