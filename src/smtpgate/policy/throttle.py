"""Failed-login throttling: per connection, per client IP, per login (README, Configuration).

Theory of operation
-------------------
Counters live in a ``ThrottleState`` (sliding windows of failure times), with
an injected clock so tests need no sleeping. The in-memory state serves one
process; a shared state (database, Redis) can replace it behind the same
small protocol.

- Per IP (``ip_failure_limit`` in ``ip_failure_window``): once reached, AUTH
  from that IP is answered 454 4.7.0 without checking credentials. IPv6
  clients are keyed by their /64, since one host usually owns a whole /64.
- Per login (``user_failure_limit`` in ``user_failure_window``), counted from
  every IP, against distributed guessing: from half the limit on, failures
  are answered ever more slowly; at the limit the login is refused (454)
  — except from IPs where it logged in successfully within
  ``KNOWN_GOOD_SECONDS``, so an attacker cannot lock the owner out.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

KNOWN_GOOD_SECONDS = 30 * 24 * 3600  # the one declaration of the 30-day known-good period
MAX_SLOWDOWN = 30.0  # seconds: the extra delay on one failed login never exceeds this
MAX_TRACKED = 100_000  # keys per table; the oldest are dropped beyond it
MAX_LISTED = 1000  # blocked keys one busiest() call returns
# A known-good (login, address) pair is written again at most this often by one process:
# the 30-day period needs only its latest success, not one row per login. Without it a
# shared state took a write per successful AUTH, on the event loop, and kept every row
# for 30 days (millions for a busy fleet of devices).
GOOD_REWRITE_SECONDS = 3600.0


@functools.lru_cache(maxsize=4096)  # asked several times per AUTH; parsing is the cost
def client_key(ip: str) -> str:
    """The throttling key of an address: itself for IPv4, its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class ThrottleState(Protocol):
    def add(self, table: str, key: str, now: float) -> None: ...

    def count(self, table: str, key: str, since: float) -> int: ...

    def last(self, table: str, key: str) -> float | None: ...

    # For the admin page: what is blocked now, and lifting a block.
    def busiest(self, table: str, since: float, minimum: int) -> list[tuple[str, int]]: ...

    def clear(self, table: str, key: str) -> None: ...


class MemoryThrottleState:
    """Sliding windows in process memory, bounded in keys and entries per key."""

    def __init__(self, max_entries_per_key: int = 1000) -> None:
        self._tables: dict[str, dict[str, deque[float]]] = {}
        self._max_entries = max_entries_per_key

    def add(self, table: str, key: str, now: float) -> None:
        rows = self._tables.setdefault(table, {})
        times = rows.pop(key, None) or deque(maxlen=self._max_entries)
        times.append(now)
        rows[key] = times  # re-inserted: dict order is least-recently-used first
        if len(rows) > MAX_TRACKED:
            del rows[next(iter(rows))]

    def count(self, table: str, key: str, since: float) -> int:
        times = self._tables.get(table, {}).get(key)
        if not times:
            return 0
        while times and times[0] < since:
            times.popleft()
        return len(times)

    def last(self, table: str, key: str) -> float | None:
        times = self._tables.get(table, {}).get(key)
        return times[-1] if times else None

    def busiest(self, table: str, since: float, minimum: int) -> list[tuple[str, int]]:
        """Keys with at least ``minimum`` entries since ``since``, most first (at most 1000)."""
        found = [(key, self.count(table, key, since)) for key in list(self._tables.get(table, {}))]
        over = [(key, n) for key, n in found if n >= minimum]
        return sorted(over, key=lambda item: (-item[1], item[0]))[:MAX_LISTED]

    def clear(self, table: str, key: str) -> None:
        self._tables.get(table, {}).pop(key, None)


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """The ``[auth]`` keys of the same names; their defaults live in config/schema.py."""

    ip_failure_limit: int
    ip_failure_window: float
    user_failure_limit: int
    user_failure_window: float


class Throttle:
    def __init__(
        self,
        limits: ThrottleLimits,
        state: ThrottleState | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.state = state if state is not None else MemoryThrottleState()
        self.clock = clock
        self._good_written: dict[str, float] = {}  # pair -> when this process last wrote it

    def ip_blocked(self, ip: str) -> bool:
        return self.ip_failures(ip) >= self.limits.ip_failure_limit

    def ip_failures(self, ip: str) -> int:
        """Failed logins from ``ip`` (its /64 for IPv6) within ``ip_failure_window``."""
        since = self.clock() - self.limits.ip_failure_window
        return self.state.count("ip", client_key(ip), since)

    def suspect(self, ip: str, login: str | None) -> bool:
        """Recent failures from ``ip``, unless ``login`` is known good there.

        Suspect addresses hash last under load (``auth.fair``); the owner who
        mistyped once from a known place is not one of them.
        """
        if login and self._known_good(login, ip):
            return False
        return self.ip_failures(ip) > 0

    def login_blocked(self, login: str, ip: str) -> bool:
        return self._login_failures(login) >= self.limits.user_failure_limit and not (
            self._known_good(login, ip)
        )

    def extra_delay(self, login: str, ip: str) -> float:
        """Slow-down for a failed login being guessed from many places (0 when not)."""
        if self._known_good(login, ip):
            return 0.0
        over = self._login_failures(login) - self.limits.user_failure_limit // 2
        return 0.0 if over < 0 else min(MAX_SLOWDOWN, 0.5 * 2.0**over)

    def record_failure(self, ip: str, login: str | None) -> None:
        now = self.clock()
        self.state.add("ip", client_key(ip), now)
        if login:
            self.state.add("login", login, now)

    def record_success(self, ip: str, login: str) -> None:
        """Remember that ``login`` succeeded from ``ip`` (known good for 30 days); written
        to the state once per ``GOOD_REWRITE_SECONDS`` per pair and process."""
        pair, now = f"{login}\0{client_key(ip)}", self.clock()
        written = self._good_written.pop(pair, None)
        if written is not None and 0 <= now - written < GOOD_REWRITE_SECONDS:
            self._good_written[pair] = written  # re-inserted: least recently used first
            return
        self.state.add("good", pair, now)
        self._good_written[pair] = now
        if len(self._good_written) > MAX_TRACKED:
            del self._good_written[next(iter(self._good_written))]

    def blocked_ips(self) -> list[tuple[str, int]]:
        """(address key, failures) of every blocked address, most failures first."""
        since = self.clock() - self.limits.ip_failure_window
        return self.state.busiest("ip", since, self.limits.ip_failure_limit)

    def blocked_logins(self) -> list[tuple[str, int]]:
        """(login, failures) of every login at its limit (known-good addresses still pass)."""
        since = self.clock() - self.limits.user_failure_window
        return self.state.busiest("login", since, self.limits.user_failure_limit)

    def unblock_ip(self, ip: str) -> None:
        """Forget the failures of ``ip`` (or of its /64, or of a key from blocked_ips)."""
        self.state.clear("ip", client_key(ip) if "/" not in ip else ip)

    def unblock_login(self, login: str) -> None:
        self.state.clear("login", login)

    def _login_failures(self, login: str) -> int:
        since = self.clock() - self.limits.user_failure_window
        return self.state.count("login", login, since)

    def _known_good(self, login: str, ip: str) -> bool:
        last = self.state.last("good", f"{login}\0{client_key(ip)}")
        return last is not None and self.clock() - last < KNOWN_GOOD_SECONDS
