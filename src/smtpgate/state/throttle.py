"""Failed-login windows in Redis: the ``ThrottleState`` of ``policy/throttle.py``.

Theory of operation
-------------------
Each window (a table -- ``ip``, ``login``, ``good`` -- and a key) is one
sorted set of event times, under a digest of the key so Redis holds no
plaintext login names or addresses. ``add`` is one Lua script (atomic: the
insert, the trimming of old and surplus entries and the expiry together),
``count`` one ZCOUNT, ``last`` one ZREVRANGE. Every instance of the server
writes and reads the same sets, so the windows hold across instances.

Times are wall-clock seconds (``Throttle`` runs on ``time.time``): the
instances' clocks must agree (NTP), as for any shared log.

Every event is also written to the ``fallback`` (the per-instance state), so
when Redis is down and ``on_failure = "open"`` the instance keeps counting
with its own recent history; with ``"closed"`` a count reads as
``closed_count`` (the limit: AUTH is answered 454 4.7.0) until Redis is back.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets

from smtpgate.policy.throttle import KNOWN_GOOD_SECONDS, ThrottleState
from smtpgate.state.link import RedisLink, StateDown

PREFIX = "smtpgate:fail:"
MAX_ENTRIES = 1000  # per window, like the in-memory state
_RETENTION = {"good": KNOWN_GOOD_SECONDS}  # seconds; others keep a day, above any window
_DAY = 86400

_ADD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local surplus = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if surplus > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, surplus - 1) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def window_key(table: str, key: str) -> str:
    return PREFIX + table + ":" + hashlib.sha256(key.encode()).hexdigest()[:32]


class RedisThrottleState:
    def __init__(self, link: RedisLink, fallback: ThrottleState, closed_count: int) -> None:
        self._link = link
        self._fallback = fallback
        self._closed_count = closed_count
        self._add = link.client.register_script(_ADD)

    def add(self, table: str, key: str, now: float) -> None:
        self._fallback.add(table, key, now)
        keep = _RETENTION.get(table, _DAY)
        member = f"{now:.6f}:{secrets.token_hex(4)}"  # two failures in one instant both count
        args: list[str | float] = [now, member, now - keep, MAX_ENTRIES, int(keep)]
        with contextlib.suppress(StateDown):  # logged by the link; the fallback has the event
            self._link.run(lambda _client: self._add(keys=[window_key(table, key)], args=args))

    def count(self, table: str, key: str, since: float) -> int:
        try:
            found = self._link.run(lambda c: c.zcount(window_key(table, key), since, "+inf"))
            return int(found)
        except StateDown:
            if self._link.fail_open:
                return self._fallback.count(table, key, since)
            return self._closed_count

    def last(self, table: str, key: str) -> float | None:
        try:
            rows = self._link.run(
                lambda c: c.zrevrange(window_key(table, key), 0, 0, withscores=True)
            )
        except StateDown:
            return self._fallback.last(table, key) if self._link.fail_open else None
        return float(rows[0][1]) if rows else None

    def busiest(self, table: str, since: float, minimum: int) -> list[tuple[str, int]]:
        """This instance's view (the admin page): Redis keys are digests, so they name
        nobody; the local fallback records every failure with its key."""
        return self._fallback.busiest(table, since, minimum)

    def clear(self, table: str, key: str) -> None:
        """Unblock everywhere: the shared window and this instance's copy."""
        self._fallback.clear(table, key)
        with contextlib.suppress(StateDown):  # logged by the link
            self._link.run(lambda c: c.delete(window_key(table, key)))
