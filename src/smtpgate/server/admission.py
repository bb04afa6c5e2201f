"""Connection limits of the whole server: ``max_connections`` and ``max_connections_per_ip``.

Theory of operation
-------------------
A connection asks ``admit(ip)`` when it is made and calls ``release(ip)``
when it is lost; a refusal names the limit, and the connection answers
``421 4.7.0`` and closes (RFC 5321 section 3.1 allows 421 in the greeting).

One process (``workers = 1``) counts in memory: ``LocalAdmission``.

Several worker processes share one ``ConnectionTable``: a block of shared
memory the supervisor maps (``MAP_SHARED``, backed by an anonymous memfd)
before it forks, so every worker and the supervisor see the same bytes.
Layout: per worker two 32-bit numbers, its live connections and the high-water
mark of its slots (one past the highest slot in use), then one region per
worker of ``max_connections`` 16-octet slots, one slot per live connection
holding a key derived from the client's address. A worker takes its lowest
free slot, so the slots in use stay packed at the start of its region and
counting an address reads only up to each worker's mark: a few hundred
octets for a few dozen connections, not ``max_connections`` slots. A worker writes only its
own total and region; a check-and-take (sum the totals, count the address's
keys in every region, fill a free slot) runs under an ``fcntl`` record lock
on the memfd, so a burst of simultaneous connects to different workers is
counted exactly. The kernel drops a dead process's record locks (a
semaphore would stay taken), and the supervisor zeroes the total and region
of a worker that died, so its slots are free at once, whatever state it left
them in.

Keys are a keyed BLAKE2b digest of the address (the key is drawn once per
table, before the fork): a marker octet 0x80 and 15 octets below 0x80, so a
key can only match at a slot boundary and counting an address is a few
``mmap.find`` calls (C speed) rather than a loop over slots in Python.
Two addresses share a key with probability 2^-105: never, in practice.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import mmap
import os
import struct
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger("smtpgate.server")

MAX_CONNECTIONS = "max_connections"
MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"
_SLOT = 16
_MARKER = 0x80
_HEADER = 8  # octets per worker before the regions: live connections, slot mark
_LOW_SEVEN = bytes(b & 0x7F for b in range(256))  # bytes.translate: clear the high bit


class Admission(Protocol):
    def admit(self, ip: str) -> str | None:
        """None when the connection may stay, else the name of the limit it hit."""
        ...

    def release(self, ip: str) -> None: ...


class LocalAdmission:
    """The limits of a single process, counted in memory."""

    def __init__(self, max_connections: int, max_per_ip: int) -> None:
        self._max_total = max_connections
        self._max_per_ip = max_per_ip
        self._total = 0
        self._per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> str | None:
        if self._total >= self._max_total:
            return MAX_CONNECTIONS
        if self._per_ip[ip] >= self._max_per_ip:
            return MAX_CONNECTIONS_PER_IP
        self._total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        if self._per_ip[ip] <= 0:
            return
        self._total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]


class ConnectionTable:
    """The shared-memory table of live connections of every worker (module docstring)."""

    def __init__(self, workers: int, max_connections: int, max_per_ip: int) -> None:
        self.workers = workers
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._region = max_connections * _SLOT
        self._header = -(-_HEADER * workers // _SLOT) * _SLOT  # padded to a slot
        size = self._header + workers * self._region
        self._fd = _anonymous_file()
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        self._secret = os.urandom(16)  # drawn before the fork: every worker derives equal keys

    def worker(self, index: int) -> SharedAdmission:
        """The ``Admission`` of worker ``index`` (call it in that worker, after the fork)."""
        return SharedAdmission(self, index)

    def forget_worker(self, index: int) -> None:
        """Free every slot of a worker that is gone (the supervisor calls this)."""
        with self.locked():
            start = self._region_start(index)
            self._map[start : start + self._region] = bytes(self._region)
            struct.pack_into("<II", self._map, _HEADER * index, 0, 0)

    def live(self) -> int:
        """Live connections of all workers."""
        with self.locked():
            return self.total()

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    # -- used by SharedAdmission, under the lock ---------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    def lock(self) -> None:  # ``locked`` without a generator: twice per connection
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def key(self, ip: str) -> bytes:
        # Imported here: the supervisor, which holds the table, never hashes an address,
        # and hashlib loads libcrypto (megabytes resident). A worker pays the import once.
        import hashlib

        digest = hashlib.blake2b(ip.encode(), digest_size=15, key=self._secret).digest()
        return b"\x80" + digest.translate(_LOW_SEVEN)

    def count(self, key: bytes, stop_at: int) -> int:
        """How many live connections have ``key`` (counting stops at ``stop_at``)."""
        found = 0
        for index, mark in enumerate(self._marks()):
            region = self._region_start(index)
            at, end = region, region + min(mark, self.max_connections) * _SLOT
            while found < stop_at:
                at = self._map.find(key, at, end)
                if at < 0:
                    break
                found += (at - region) % _SLOT == 0  # always true: the marker aligns keys
                at += 1
        return found

    def put(self, index: int, slot: int, key: bytes, delta: int) -> None:
        """Fill (``delta`` +1) or empty (-1) a slot; keep the worker's total and mark."""
        region = self._region_start(index)
        at = region + slot * _SLOT
        self._map[at : at + _SLOT] = key
        total, mark = struct.unpack_from("<II", self._map, _HEADER * index)
        if delta > 0:
            mark = max(mark, slot + 1)
        elif slot + 1 >= mark:  # the top slot emptied: lower the mark past empty ones
            empty = bytes(_SLOT)
            mark = slot
            while mark and self._map[region + (mark - 1) * _SLOT : region + mark * _SLOT] == empty:
                mark -= 1
        struct.pack_into("<II", self._map, _HEADER * index, max(0, total + delta), mark)

    def free_slots(self, index: int) -> list[int]:
        """The empty slots of worker ``index``, as a heap (``heapq``: the lowest is taken
        first). Read, not assumed: a second view of one index (a test, a replacement not
        yet forgotten) must not overwrite the slots the first one holds."""
        start, empty = self._region_start(index), bytes(_SLOT)
        with self.locked():
            return [slot for slot in range(self.max_connections)
                    if self._map[start + slot * _SLOT : start + (slot + 1) * _SLOT] == empty]

    def total(self) -> int:
        return sum(struct.unpack_from(f"<{2 * self.workers}I", self._map, 0)[0::2])

    def _marks(self) -> list[int]:
        """Per worker: one past its highest slot in use."""
        return list(struct.unpack_from(f"<{2 * self.workers}I", self._map, 0)[1::2])

    def _region_start(self, index: int) -> int:
        return self._header + index * self._region


class SharedAdmission:
    """One worker's view of a ``ConnectionTable``: the limits of the whole server."""

    def __init__(self, table: ConnectionTable, index: int) -> None:
        self._table = table
        self._index = index
        self._free = table.free_slots(index)
        self._held: defaultdict[str, list[int]] = defaultdict(list)  # ip -> its slots here

    def admit(self, ip: str) -> str | None:
        table = self._table
        key = table.key(ip)
        table.lock()
        try:
            if table.total() >= table.max_connections or not self._free:
                return MAX_CONNECTIONS
            if table.count(key, table.max_per_ip) >= table.max_per_ip:
                return MAX_CONNECTIONS_PER_IP
            slot = heapq.heappop(self._free)  # the lowest: slots in use stay packed
            table.put(self._index, slot, key, +1)
        finally:
            table.unlock()
        self._held[ip].append(slot)
        return None

    def release(self, ip: str) -> None:
        slots = self._held.get(ip)
        if not slots:
            return
        slot = slots.pop()
        if not slots:
            del self._held[ip]
        table = self._table
        table.lock()
        try:
            table.put(self._index, slot, bytes(_SLOT), -1)
        finally:
            table.unlock()
        heapq.heappush(self._free, slot)


def _anonymous_file() -> int:
    """A file descriptor of a nameless file (memfd on Linux), for mmap and fcntl."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd: int = memfd_create("smtpgate-connections", os.MFD_CLOEXEC)
        return fd
    import tempfile  # elsewhere than Linux only

    with tempfile.TemporaryFile() as handle:  # unlinked at once; the duplicate keeps it
        return os.dup(handle.fileno())
