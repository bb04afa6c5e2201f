"""One Redis connection per process, and whether it works right now.

Theory of operation
-------------------
The state objects (``state/throttle.py``, ``state/admission.py``) implement
synchronous interfaces the connection and the auth service call inline, so
they use redis-py's synchronous client. Every call is a single round trip
(a Lua script or one command) on loopback or a LAN, bounded by ``TIMEOUT``
for connecting and for each reply, and redis-py's own retries are off: a
call that cannot be answered fails fast and the caller falls back.

``run(work)`` returns what ``work(client)`` returns, or raises ``StateDown``.
After a failure the link is *down* and refuses at once for ``RETRY`` seconds
(so a dead Redis costs at most one timeout per ``RETRY``, not one per call);
the next call after that tries again on a fresh connection, which is how it
reconnects by itself. Each change between up and down is logged once, with
Redis's host and port but never the URL (it may carry a password).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

T = TypeVar("T")
log = logging.getLogger("smtpgate.state")

TIMEOUT = 0.25  # seconds to connect, and to wait for one reply
RETRY = 1.0  # seconds a down link refuses at once before it tries again


class StateDown(Exception):
    """Redis could not answer; the caller falls back (open) or refuses (closed)."""


class RedisLink:
    def __init__(self, url: str, *, on_failure: str = "open", timeout: float = TIMEOUT) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=64,  # the loop thread, the heartbeat and readiness checks
        )
        self.fail_open = on_failure == "open"
        parts = urllib.parse.urlsplit(url)
        self.where = f"{parts.hostname or parts.path}:{parts.port or 6379}"
        self._up = True
        self._retry_at = 0.0
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self._up

    def run(self, work: Callable[[redis.Redis], T]) -> T:
        if not self._up and time.monotonic() < self._retry_at:
            raise StateDown
        try:
            result = work(self.client)
        except (redis.RedisError, OSError) as exc:
            self._mark(False, type(exc).__name__)
            raise StateDown from None
        self._mark(True, "")
        return result

    def ping(self) -> bool:
        """Does Redis answer now? (For readiness: never raises.)"""
        try:
            return bool(self.run(lambda client: client.ping()))
        except StateDown:
            return False

    def close(self) -> None:
        self.client.close()

    def _mark(self, up: bool, reason: str) -> None:
        with self._lock:
            if not up:
                self._retry_at = time.monotonic() + RETRY
            if up == self._up:
                return
            self._up = up
        if up:
            log.warning("state %s reachable again: limits are shared", self.where)
        else:
            then = "counting per instance" if self.fail_open else "refusing logins (454)"
            log.error("state %s unreachable (%s): %s until it is back", self.where, reason, then)
