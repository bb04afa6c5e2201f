"""Verified-credentials cache, like Dovecot's auth_cache.

A successful password check is remembered for ``ttl`` seconds (renewed on
each hit) under the key
(user, HMAC(per-process random key, password)): the password itself is never
kept. An entry is only honoured while the account's stored hash is still the
one it was verified against, so ``user passwd`` and ``user del`` (from any
process) take effect at the next AUTH.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable


class VerifiedCache:
    def __init__(
        self, ttl: float = 60.0, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, str]] = OrderedDict()

    def fingerprint(self, user: str, password: str) -> tuple[str, bytes]:
        mac = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return user, mac.digest()

    def hit(self, user: str, password: str, stored: str) -> bool:
        key = self.fingerprint(user, password)
        entry = self._entries.get(key)
        if entry is None:
            return False
        expires, verified_hash = entry
        now = self._clock()
        if now > expires or not hmac.compare_digest(verified_hash, stored):
            del self._entries[key]
            return False
        self._entries[key] = (now + self._ttl, verified_hash)  # in steady use it stays warm
        return True

    def remember(self, user: str, password: str, stored: str) -> None:
        key = self.fingerprint(user, password)
        self._entries[key] = (self._clock() + self._ttl, stored)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
