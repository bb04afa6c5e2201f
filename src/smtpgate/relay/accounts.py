"""Which ``[[relay.account]]`` sends a message: chosen by the envelope sender.

Each account lists ``senders``: ``"*"`` (anyone), ``"*@domain"`` (that
domain, case-insensitive) or exact addresses (case-insensitive). The first
account, in file order, with a matching pattern wins: put exact addresses
first and ``"*"`` last. A bounce (null sender) uses the first account that
has ``"*"``, else the first account. Microsoft 365 sends only as the mailbox
that authenticated (or one it may send as), so one account per mailbox is
the usual set-up there.
"""

from __future__ import annotations

from smtpgate.config.schema import RelayAccount


def matches(pattern: str, sender: str) -> bool:
    sender = sender.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*@"):
        return sender.rpartition("@")[2] == pattern[2:]
    return sender == pattern


def choose(accounts: tuple[RelayAccount, ...], sender: str) -> RelayAccount | None:
    """The account for ``sender`` ("" for a bounce), or None when none matches."""
    if not sender:
        wildcard = [a for a in accounts if "*" in a.senders] or list(accounts)
        return wildcard[0] if wildcard else None
    for account in accounts:
        if any(matches(p, sender) for p in account.senders):
            return account
    return None
