"""Queue administration for the CLI: list, show, retry, hold, release, delete, bounce.

Each change claims the entry (the same ``flock`` the deliverers take), so
it never races a delivery in progress, rewrites the record atomically and
then touches ``queue/kick`` so that running deliverers rescan within a
second. The commands therefore work while the server runs. ``bounce``
marks every pending recipient failed; the deliverer then sends the DSN and
removes the entry (at once if the server runs, else at its next start).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from smtpgate.relay.entry import CorruptEntry, QueueEntry
from smtpgate.relay.queue import Busy, Missing, QueueStore

BUSY_WAIT = 3.0  # seconds the CLI waits for a delivery attempt in progress
BOUNCED_BY_ADMIN = "554 5.0.0 returned to the sender by the administrator"


class AdminError(Exception):
    """A one-line problem for the user (unknown id, entry busy, unreadable record)."""


def entries(store: QueueStore) -> Iterator[QueueEntry]:
    """Every readable entry in queue order; unreadable ones are skipped here."""
    if not store.root.exists():
        return
    found: list[QueueEntry] = []
    for queue_id in store.ids():
        try:
            found.append(store.load(queue_id))
        except (Missing, CorruptEntry):
            continue
    yield from sorted(found, key=lambda e: (e.received_at, e.id))


def load(store: QueueStore, queue_id: str) -> QueueEntry:
    try:
        return store.load(queue_id)
    except Missing:
        raise AdminError(f"no queued message {queue_id!r}") from None
    except CorruptEntry as exc:
        raise AdminError(f"queue record {queue_id} is unreadable: {exc}") from None


@contextlib.contextmanager
def claimed(store: QueueStore, queue_id: str, wait: float = BUSY_WAIT) -> Iterator[None]:
    """The entry's lock, waiting up to ``wait`` seconds for a delivery attempt to end."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with store.claim(queue_id):
                yield
            return
        except Missing:
            raise AdminError(f"no queued message {queue_id!r}") from None
        except Busy:
            if time.monotonic() > deadline:
                raise AdminError(f"{queue_id} is being delivered right now; try again") from None
            time.sleep(0.05)


def change(store: QueueStore, queue_id: str, edit: Callable[[QueueEntry], None]) -> QueueEntry:
    """Claim, reload, edit, save, kick."""
    with claimed(store, queue_id):
        entry = load(store, queue_id)
        edit(entry)
        store.save(entry)
    store.kick()
    return entry


def retry(entry: QueueEntry) -> None:
    entry.next_attempt = time.time()


def hold(entry: QueueEntry) -> None:
    entry.held = True


def release(entry: QueueEntry) -> None:
    entry.held = False
    entry.next_attempt = time.time()


def bounce(entry: QueueEntry) -> None:
    for recipient in entry.pending:
        recipient.status = "failed"
        recipient.reply = BOUNCED_BY_ADMIN
    entry.held = False
    entry.next_attempt = time.time()


def delete(store: QueueStore, queue_id: str) -> None:
    with claimed(store, queue_id):
        store.remove(queue_id)
