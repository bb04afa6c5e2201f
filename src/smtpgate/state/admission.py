"""Connections per client address across instances: leases in Redis.

Theory of operation
-------------------
``RedisAdmission`` wraps the instance's own ``Admission`` (``inner``: in
memory, or the workers' shared-memory table), which still enforces
``max_connections`` -- a per-machine capacity -- and counts per address on
this instance. On top, ``max_connections_per_ip`` is checked in Redis:

- Each address has one hash ``smtpgate:conn:<digest>``: field = process id
  (random per process), value = that process's live connections from it.
- Each process keeps ``smtpgate:alive:<id>`` with a TTL of ``LEASE_TTL``
  seconds, renewed every ``LEASE_TTL / 3`` by a heartbeat thread.
- ``admit`` is one Lua script: renew our own alive key, sum the fields of
  processes that are alive (deleting those that are not), refuse at the
  limit, else add one to our field. Atomic, so a burst of connects to
  several instances is counted exactly.

A SIGKILLed instance stops renewing its alive key: within ``LEASE_TTL``
seconds its connections no longer count anywhere. The heartbeat also writes
this process's full counts again, so a Redis restart (which loses
everything) or a release that failed while Redis was away is repaired
within a heartbeat. A clean stop (``close``) deletes our fields at once.

Redis down: connections are admitted on the inner limits alone, with either
``on_failure``: those still bound what one instance spends, so refusing every
client would only turn a Redis outage into a mail outage. ``on_failure =
"closed"`` is for the failed-login windows (``state/throttle.py``), which
guard accounts: AUTH is answered 454 4.7.0 until Redis is back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
from collections import Counter
from typing import Protocol

import redis

from smtpgate.state.link import RedisLink, StateDown

log = logging.getLogger("smtpgate.state")

LEASE_TTL = 30  # seconds: a dead instance's connections stop counting within this
PER_IP = "max_connections_per_ip"  # the names server/admission.py gives its limits
CONN_PREFIX = "smtpgate:conn:"
ALIVE_PREFIX = "smtpgate:alive:"

_ADMIT = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local who = fields[i]
  if who == ARGV[1] or redis.call('EXISTS', ARGV[4] .. who) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], who)
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return 1
"""

_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


class Admission(Protocol):  # server/admission.py's, restated: state sits below server
    def admit(self, ip: str) -> str | None: ...

    def release(self, ip: str) -> None: ...


def conn_key(ip: str) -> str:
    return CONN_PREFIX + hashlib.sha256(ip.encode()).hexdigest()[:32]


class RedisAdmission:
    def __init__(
        self, link: RedisLink, inner: Admission, max_per_ip: int, *, ttl: int = LEASE_TTL
    ) -> None:
        self._link = link
        self._inner = inner
        self._max_per_ip = max_per_ip
        self._ttl = ttl
        self.instance = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._alive = ALIVE_PREFIX + self.instance
        self._held: Counter[str] = Counter()  # our live connections per address
        self._stale: set[str] = set()  # addresses whose release did not reach Redis
        self._lock = threading.Lock()  # _held and _stale: the loop and the heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admit = link.client.register_script(_ADMIT)
        self._release = link.client.register_script(_RELEASE)

    def admit(self, ip: str) -> str | None:
        refused = self._inner.admit(ip)
        if refused is not None:
            return refused
        keys = [conn_key(ip), self._alive]
        args: list[str | int] = [self.instance, self._max_per_ip, self._ttl, ALIVE_PREFIX]
        try:
            taken = self._link.run(lambda _c: self._admit(keys=keys, args=args))
        except StateDown:
            taken = True  # the inner limits alone, whatever on_failure says (docstring)
        if not taken:
            self._inner.release(ip)
            return PER_IP
        with self._lock:
            self._held[ip] += 1
        return None

    def release(self, ip: str) -> None:
        with self._lock:
            if self._held[ip] <= 0:
                return
            self._held[ip] -= 1
            if not self._held[ip]:
                del self._held[ip]
        self._inner.release(ip)
        try:
            self._link.run(lambda _c: self._release(keys=[conn_key(ip)], args=[self.instance]))
        except StateDown:
            with self._lock:
                self._stale.add(ip)

    # -- the lease ---------------------------------------------------------------
    def start(self) -> None:
        """Start the heartbeat thread (once the process serves)."""
        self._thread = threading.Thread(target=self._beat, name="smtpgate-lease", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeat and give our leases back at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            addresses = set(self._held) | self._stale
        with contextlib.suppress(StateDown):  # if so, the alive key expires by itself
            self._link.run(lambda c: self._forget(c, addresses))

    def heartbeat(self) -> None:
        """Renew our alive key and write our counts again (repairs a restarted Redis)."""
        with self._lock:
            held, stale = dict(self._held), set(self._stale)
        try:
            self._link.run(lambda c: self._write(c, held, stale))
        except StateDown:
            return
        with self._lock:
            self._stale -= stale

    def _beat(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                self.heartbeat()
            except Exception as exc:  # never let the thread die: leases would expire
                log.error("lease heartbeat failed: %s", type(exc).__name__)

    def _write(self, client: redis.Redis, held: dict[str, int], stale: set[str]) -> None:
        pipe = client.pipeline(transaction=True)  # MULTI/EXEC: all or nothing
        pipe.set(self._alive, "1", ex=self._ttl)
        for ip in stale - set(held):
            pipe.hdel(conn_key(ip), self.instance)
        for ip, count in held.items():
            pipe.hset(conn_key(ip), self.instance, count)
            pipe.expire(conn_key(ip), 2 * self._ttl)
        pipe.execute()

    def _forget(self, client: redis.Redis, addresses: set[str]) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.delete(self._alive)
        for ip in addresses:
            pipe.hdel(conn_key(ip), self.instance)
        pipe.execute()
