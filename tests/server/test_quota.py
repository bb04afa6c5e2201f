"""Daily device quotas (server/quota_db.py, server/senders.py): exact under processes
racing on one SQLite file, private, failing closed; and the MAIL FROM decision."""

from __future__ import annotations

import multiprocessing
import os
from datetime import date
from pathlib import Path

import pytest

from smtpgate.credentials.base import Account
from smtpgate.protocol import replies as r
from smtpgate.server.quota_db import SqliteQuota
from smtpgate.server.senders import (
    OVER_DAILY_QUOTA,
    SENDER_NOT_ALLOWED,
    DailyQuota,
    MemoryQuota,
    QuotaUnavailable,
    SenderPolicy,
)

DAY = "2026-06-15"


def _take_many(path: str, tries: int, results: multiprocessing.Queue[int]) -> None:
    quota = SqliteQuota(Path(path))
    results.put(sum(quota.take("copier", DAY, 50) for _ in range(tries)))
    quota.close()


def test_processes_share_the_count_exactly(tmp_path: Path) -> None:
    path = tmp_path / "data" / "quota.db"
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = context.Queue()
    workers = [context.Process(target=_take_many, args=(str(path), 40, results))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    counted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert sum(counted) == 50  # 120 tries, the limit exactly, however they interleaved
    assert SqliteQuota(path).count("copier", DAY) == 50
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_days_and_accounts_are_counted_apart(tmp_path: Path, kind: str) -> None:
    quota: DailyQuota = SqliteQuota(tmp_path / "q.db") if kind == "sqlite" else MemoryQuota()
    assert [quota.take("a", DAY, 2) for _ in range(3)] == [True, True, False]
    assert quota.take("b", DAY, 2)
    assert quota.take("a", "2026-06-16", 2)  # a new UTC day
    assert not quota.take("a", DAY, 0)
    assert (quota.count("a", DAY), quota.count("b", DAY), quota.count("c", DAY)) == (2, 1, 0)
    quota.close()


def test_an_unusable_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "quota.db"
    path.write_bytes(b"not a database " * 100)
    quota = SqliteQuota(path)
    with pytest.raises(QuotaUnavailable):
        quota.take("a", DAY, 5)
    policy = SenderPolicy(False, quota, today=lambda: date(2026, 6, 15))
    device = Account("d", kind="device", senders=("s@example.org",), max_per_day=5)
    assert policy.check(device, "d", "s@example.org") == r.LOCAL_ERROR  # 451 4.3.0


def test_sender_policy() -> None:
    quota = MemoryQuota()
    policy = SenderPolicy(False, quota, today=lambda: date(2026, 6, 15))
    enforced = SenderPolicy(True, quota, today=lambda: date(2026, 6, 15))
    device = Account("d", kind="device", senders=("s@example.org",), max_per_day=1)
    person = Account("p", senders=("p@example.org",))
    assert policy.check(None, "", "anyone@example.org") is None  # no AUTH: not ours to judge
    assert policy.check(person, "p", "other@example.org") is None  # not enforced for people
    assert enforced.check(person, "p", "other@example.org") == SENDER_NOT_ALLOWED
    assert enforced.check(person, "p", "p@example.org") is None
    assert policy.check(device, "d", "other@example.org") == SENDER_NOT_ALLOWED
    assert quota.count("d", DAY) == 0  # a refused sender is not counted
    assert policy.needs_thread(device) and not policy.needs_thread(person)
    assert policy.check(device, "d", "s@example.org") is None
    assert policy.check(device, "d", "s@example.org") == OVER_DAILY_QUOTA
    assert (OVER_DAILY_QUOTA.code, OVER_DAILY_QUOTA.enhanced) == (451, "4.7.1")
    assert SENDER_NOT_ALLOWED.to_bytes() == (
        b"553 5.7.1 Sender address not allowed for this account\r\n"
    )
