"""The queue page: the relay queue through the same functions as ``smtpgate queue ...``.

Theory of operation
-------------------
Only in ``[delivery] mode = "relay"`` is there a queue (``<data_dir>/queue/``,
``relay/queue.py``); in the other modes the page says so and changes nothing.
Listing, showing, retrying and deleting call ``relay/admin.py`` exactly as
``cli/queue.py`` does: each change claims the entry with the deliverers' lock
(waiting up to a few seconds for a delivery attempt in progress), so those
calls run in a thread, off the event loop. A change redirects back with a
one-line notice (``pages.back``), so a reload never repeats it.

"Headers" shows the message's header section only, never its body, read from
at most ``HEADER_LIMIT`` bytes of the message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from smtpgate.admin.http import CONTEXT, render, session_of
from smtpgate.admin.pages import back, notice, queue_store
from smtpgate.relay import admin
from smtpgate.relay.entry import QueueEntry
from smtpgate.relay.queue import Missing, QueueStore

log = logging.getLogger("smtpgate.admin")
PER_PAGE = 50  # like `smtpgate queue list`
MAX_PAGE = 10_000  # a page number beyond any real queue
HEADER_LIMIT = 64 * 1024  # bytes of a message read for its headers


@dataclass(frozen=True, slots=True)
class Row:
    """One listed message, as `smtpgate queue list` prints it."""

    entry: QueueEntry
    age: str
    next_in: str  # "-" when held or done


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/queue", queue)
    router.add_get("/queue/show", show)
    router.add_post("/queue/retry", retry)
    router.add_post("/queue/delete", delete)


async def queue(request: web.Request) -> web.Response:
    store = queue_store(request.app[CONTEXT].config)
    if store is None:
        return render(request, "queue.html", relay=False, notice=notice(request))
    page = _page_number(request.query.get("page", "1"))
    try:
        everything = await asyncio.to_thread(lambda: list(admin.entries(store)))
        error = ""
    except OSError as exc:
        everything, error = [], f"The queue cannot be read: {exc.strerror or exc}"
    pages = max(1, -(-len(everything) // PER_PAGE))
    page = min(page, pages)
    now = time.time()
    rows = [_row(e, now) for e in everything[(page - 1) * PER_PAGE:page * PER_PAGE]]
    return render(
        request, "queue.html", relay=True, rows=rows, total=len(everything), page=page,
        pages=pages, error=error, notice=notice(request),
    )


async def show(request: web.Request) -> web.Response:
    """One message's envelope, state and header section."""
    store = _relay_store(request)
    queue_id = request.query.get("id", "")[:100]
    try:
        entry, headers = await asyncio.to_thread(_entry_and_headers, store, queue_id)
    except admin.AdminError as exc:
        raise back("/queue", str(exc)) from None
    return render(request, "queue_show.html", row=_row(entry, time.time()), headers=headers)


async def retry(request: web.Request) -> web.Response:
    store = _relay_store(request)
    queue_id = await _queue_id(request)
    await _apply(request, "retry", lambda: admin.change(store, queue_id, admin.retry))
    raise back("/queue", f"{queue_id} will be tried now.")


async def delete(request: web.Request) -> web.Response:
    store = _relay_store(request)
    queue_id = await _queue_id(request)
    await _apply(request, "delete", lambda: admin.delete(store, queue_id))
    raise back("/queue", f"Deleted {queue_id}.")


async def _apply(request: web.Request, verb: str, call: Callable[[], object]) -> None:
    """Run one relay.admin change in a thread; a refusal goes back as the notice."""
    queue_id = await _queue_id(request)
    try:
        await asyncio.to_thread(call)
    except admin.AdminError as exc:
        raise back("/queue", f"Not done: {exc}") from None
    except OSError as exc:
        raise back("/queue", f"Not done: {exc.strerror or exc}") from None
    log.info("admin=%s queue %s %s", session_of(request).admin, verb, queue_id)


def _relay_store(request: web.Request) -> QueueStore:
    store = queue_store(request.app[CONTEXT].config)
    if store is None:
        raise back("/queue", "This server does not relay: there is no queue.")
    return store


async def _queue_id(request: web.Request) -> str:
    return str((await request.post()).get("id", ""))[:100]


def _entry_and_headers(store: QueueStore, queue_id: str) -> tuple[QueueEntry, str]:
    entry = admin.load(store, queue_id)
    try:
        head = store.read_message(queue_id, HEADER_LIMIT)
    except (FileNotFoundError, Missing):
        raise admin.AdminError(f"no queued message {queue_id!r}") from None
    except OSError as exc:
        raise admin.AdminError(f"{queue_id}: {exc.strerror or exc}") from None
    return entry, header_section(head)


def header_section(head: bytes) -> str:
    """The header lines before the first empty line (RFC 5322 section 2.1), as text."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            head = head[:end]
            break
    # Headers are ASCII (RFC 5322) or UTF-8 (RFC 6532); anything else is shown replaced.
    return head.decode("utf-8", "replace").replace("\r\n", "\n")


def _row(entry: QueueEntry, now: float) -> Row:
    waiting = entry.pending and not entry.held
    next_in = span(entry.next_attempt - now) if waiting else "-"
    if waiting and entry.next_attempt <= now:
        next_in = "now"
    return Row(entry, span(now - entry.received_at), next_in)


def span(seconds: float) -> str:
    """A rough length of time for people: "42s", "59m", "3h 5m", "2d 4h"."""
    whole = max(1, round(seconds))
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if days:
        return f"{days}d {hours % 24}h".removesuffix(" 0h")
    if hours:
        return f"{hours}h {minutes % 60}m".removesuffix(" 0m")
    return f"{minutes}m" if minutes else f"{whole}s"


def _page_number(text: str) -> int:
    return min(int(text), MAX_PAGE) if text.isdigit() and int(text) > 0 else 1
