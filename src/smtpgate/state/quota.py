"""Device daily message counts in Redis: the ``DailyQuota`` of ``server/senders.py``.

Theory of operation
-------------------
One counter per account and UTC day, ``smtpgate:quota:<day>:<digest>``,
expiring two days later. ``take`` is one Lua script (read, compare with the
limit, increment), so two instances at ``limit - 1`` cannot both count the
last message.

Redis down: ``on_failure = "open"`` counts in this instance's own quota (the
``fallback``, ``<data_dir>/quota.db``), so each instance allows up to the
limit while it lasts; ``"closed"`` raises ``unavailable`` (the server's
``QuotaUnavailable``: MAIL FROM is answered 451 4.3.0).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from smtpgate.state.link import RedisLink, StateDown

PREFIX = "smtpgate:quota:"
KEEP = 2 * 86400  # seconds a day's counter lives: past the day in every time zone

_TAKE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class Quota(Protocol):  # server/senders.py's DailyQuota, restated: state sits below server
    def take(self, account: str, day: str, limit: int) -> bool: ...

    def count(self, account: str, day: str) -> int: ...

    def close(self) -> None: ...


def quota_key(account: str, day: str) -> str:
    return PREFIX + day + ":" + hashlib.sha256(account.encode()).hexdigest()[:32]


class RedisQuota:
    def __init__(self, link: RedisLink, fallback: Quota, unavailable: type[Exception]) -> None:
        self._link = link
        self._fallback = fallback
        self._unavailable = unavailable
        self._take = link.client.register_script(_TAKE)

    def take(self, account: str, day: str, limit: int) -> bool:
        if limit < 1:
            return False
        keys, args = [quota_key(account, day)], [limit, KEEP]
        try:
            return bool(self._link.run(lambda _c: self._take(keys=keys, args=args)))
        except StateDown:
            if self._link.fail_open:
                return self._fallback.take(account, day, limit)
            raise self._unavailable("state") from None

    def count(self, account: str, day: str) -> int:
        try:
            value = self._link.run(lambda c: c.get(quota_key(account, day)))
        except StateDown:
            if self._link.fail_open:
                return self._fallback.count(account, day)
            raise self._unavailable("state") from None
        return int(value or 0)

    def close(self) -> None:
        self._fallback.close()
