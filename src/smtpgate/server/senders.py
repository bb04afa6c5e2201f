"""The MAIL FROM checks of an authenticated session: sender lists and daily quotas.

Theory of operation
-------------------
When a session has authenticated, the connection keeps the ``Account`` the
auth service read at that AUTH (``Turn.account``) and asks ``SenderPolicy``
at each MAIL FROM, before it answers:

1. The sender: a device is always held to its ``senders``; a person only when
   ``[auth] enforce_sender = true`` (``credentials/devices.py``,
   ``may_send_as``). Outside them: ``553 5.7.1``. Nothing is counted.
2. The daily count, for an account with ``max_per_day``: one message is
   counted per MAIL FROM that passes step 1, per UTC day, in a
   ``DailyQuota`` shared by every worker. Counting at MAIL FROM (not when
   the message is accepted) makes the check and the count one atomic step,
   so parallel connections of one device can never pass the limit together;
   the price is that a transaction abandoned after MAIL FROM still counts.
   At the limit: ``451 4.7.1``, temporary, so a device retries tomorrow.
   A quota store that fails answers ``451 4.3.0``: the limit is a security
   control, so it fails closed, and a device retries.

Sessions without AUTH (``require_auth = false`` listeners) pass untouched.
A ``DailyQuota`` may block (SQLite, later Redis): the connection then runs
``check`` in a worker thread (``needs_thread``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from smtpgate.credentials.base import Account
from smtpgate.credentials.devices import enforces_sender, may_send_as
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply

__all__ = [
    "OVER_DAILY_QUOTA",
    "SENDER_NOT_ALLOWED",
    "DailyQuota",
    "MemoryQuota",
    "QuotaUnavailable",
    "SenderPolicy",
]

SENDER_NOT_ALLOWED = r.SENDER_NOT_ALLOWED  # the replies catalogue holds them; kept
OVER_DAILY_QUOTA = r.OVER_DAILY_QUOTA  # here by name for the callers and tests


class QuotaUnavailable(Exception):
    """The quota store cannot be used right now."""


class DailyQuota(Protocol):
    """Messages counted per account and UTC day, shared by every worker process."""

    def take(self, account: str, day: str, limit: int) -> bool:
        """Count one message if fewer than ``limit`` are counted; whether it was counted.

        Atomic: two processes at ``limit - 1`` cannot both get True.
        ``day`` is ``YYYY-MM-DD`` (UTC). Raises QuotaUnavailable.
        """

    def count(self, account: str, day: str) -> int:
        """Messages counted so far (for ``device show``, tests)."""

    def close(self) -> None: ...


class MemoryQuota:
    """A ``DailyQuota`` for one process (an embedded Server, tests)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, account: str, day: str, limit: int) -> bool:
        with self._lock:
            oldest = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
            for key in [k for k in self._counts if k[1] < oldest]:
                del self._counts[key]  # like quota_db: memory stays bounded
            counted = self._counts.get((account, day), 0)
            if counted >= limit:
                return False
            self._counts[(account, day)] = counted + 1
            return True

    def count(self, account: str, day: str) -> int:
        with self._lock:
            return self._counts.get((account, day), 0)

    def close(self) -> None:
        pass


def _utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    enforce_sender: bool  # [auth] enforce_sender: people too
    quota: DailyQuota = field(default_factory=MemoryQuota)
    today: Callable[[], date] = _utc_today

    def needs_thread(self, account: Account | None) -> bool:
        """Whether ``check`` may block (it will use the quota)."""
        return account is not None and account.max_per_day is not None

    def check(self, account: Account | None, user: str, sender: str) -> Reply | None:
        """None to accept MAIL FROM ``sender`` ("" for <>), else the refusal.

        ``account``: proven at AUTH (None: no AUTH); ``user``: the identity it acts as.
        """
        if account is None:
            return None
        if enforces_sender(account, self.enforce_sender) and not may_send_as(
            account, user, sender
        ):
            return SENDER_NOT_ALLOWED
        if account.max_per_day is None:
            return None
        try:
            counted = self.quota.take(account.name, self.today().isoformat(), account.max_per_day)
        except QuotaUnavailable:
            return r.LOCAL_ERROR
        return None if counted else OVER_DAILY_QUOTA
