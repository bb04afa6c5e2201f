"""Device accounts: where a login may come from, until when, and as whom it may send.

Theory of operation
-------------------
An ``Account`` (``credentials/base.py``) is a *person* or a *device*. A device
is an SMTP-only account for a copier, scanner or script, bound to:

- ``senders``: the envelope senders it may use, addresses or ``*@domain``;
- ``networks``: the client addresses it may log in from (CIDRs; none: any);
- ``expires``: the last UTC day it may log in (``None``: never expires);
- ``disabled``: a switch the administrator flips (``device disable``);
- ``max_per_day``: messages per UTC day (counted by ``server/quota_db.py``).

A person's ``senders`` are its ``--address`` list, checked only when
``[auth] enforce_sender = true``.

Everything here is pure: the caller passes the client address and today's
date. ``login_refusal`` says why a proven login must still fail; the auth
service then answers exactly like a wrong password (``auth/service.py``).
``may_send_as`` is the MAIL FROM check.

Addresses compare case-insensitively, local part included: an administrator
writing ``Scanner@Example.org`` means the same mailbox as the device that
sends ``scanner@example.org``, and being stricter than the operator's own
mailbox provider would only break devices. ``*@domain`` matches every local
part at exactly that domain, not its subdomains. The null sender ``<>`` is
in no list, so an account whose senders are enforced cannot use it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import date

from smtpgate.credentials.base import Account

__all__ = [
    "DEVICE",
    "PERSON",
    "login_refusal",
    "may_send_as",
    "parse_expires",
    "parse_network",
    "parse_sender",
]

PERSON = "person"
DEVICE = "device"
KINDS = (PERSON, DEVICE)
_MAX_ADDRESS = 254  # RFC 5321 section 4.5.3.1.3 (a path of 256 with its brackets)
_WILDCARD = "*@"


def parse_sender(text: str) -> str:
    """``local@domain`` or ``*@domain``, lower-cased; ValueError naming the problem."""
    value = text.strip().lower()
    local, at, domain = value.rpartition("@")
    bad = (
        not at or not local or not domain or len(value) > _MAX_ADDRESS
        or any(ch.isspace() or ch in "<>,\\\"" for ch in value)
        or value.count("@") != 1 or domain.startswith(".") or domain.endswith(".") or ".." in domain
        or ("*" in local and local != "*") or "*" in domain
    )
    if bad:
        raise ValueError(f"bad sender {text!r}: expected local@domain or *@domain")
    return value


def parse_network(text: str) -> str:
    """A CIDR (``192.0.2.0/24``, ``2001:db8::/32``) or one address, normalised."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError:
        raise ValueError(
            f"bad network {text!r}: expected a CIDR such as 192.0.2.0/24 with no host bits set"
        ) from None


def parse_expires(text: str) -> date:
    """``YYYY-MM-DD``; any valid date, past ones included (the device is then expired)."""
    try:
        if len(text) != len("YYYY-MM-DD"):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad date {text!r}: expected YYYY-MM-DD") from None


def login_refusal(account: Account, client_ip: str, today: date) -> str | None:
    """Why a login with proven credentials must still fail (for the log), or None.

    ``today`` is the current UTC date: an account is valid through its
    ``expires`` day and expired from the next.
    """
    if account.disabled:
        return "disabled"
    if account.expires is not None and today > account.expires:
        return "expired"
    if account.networks and not in_networks(client_ip, account.networks):
        return "network"
    return None


def in_networks(client_ip: str, networks: Iterable[str]) -> bool:
    """Whether ``client_ip`` is in one of ``networks`` (an IPv4-mapped IPv6 counts as IPv4)."""
    try:
        address = ipaddress.ip_address(client_ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for text in networks:
        try:
            network = ipaddress.ip_network(text)
        except ValueError:
            continue  # parse_network let nothing else in; be safe with old rows
        if address.version == network.version and address in network:
            return True
    return False


def enforces_sender(account: Account, enforce_for_people: bool) -> bool:
    """Devices are always held to their senders; people when ``enforce_sender`` is on."""
    return account.kind == DEVICE or enforce_for_people


def may_send_as(account: Account, authzid: str, sender: str) -> bool:
    """Whether ``sender`` (the MAIL FROM mailbox, "" for ``<>``) is the account's to use.

    Allowed: a listed address; any address at a listed ``*@domain``; for a
    person, its own name or the authorization identity it acts as (already
    checked at AUTH) when that looks like an address.
    """
    if not sender:
        return False
    wanted = sender.lower()
    domain = wanted.rpartition("@")[2]
    for pattern in account.senders:
        if pattern == wanted or (pattern.startswith(_WILDCARD) and pattern[2:] == domain):
            return True
    if account.kind == PERSON:
        return wanted in {account.name.lower(), authzid.lower()} and "@" in wanted
    return False
