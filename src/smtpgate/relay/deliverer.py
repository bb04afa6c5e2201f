"""The background deliverer: queue order, bounded connections, retries, expiry, bounces.

Theory of operation
-------------------
Index. Memory holds an index: a heap of ``(next_attempt, received_at, id)``
and the time each id is due. It is filled by a scan of ``queue/`` at start
(in the background: the server serves at once), by ``hand_over`` from the
relay target after each commit,
and by a full rescan when the CLI touches ``queue/kick`` (checked every
``POLL`` seconds), and every ``RESCAN`` seconds by a scan that reads only
ids the index lacks (entries written by other worker processes). Stale
heap items are skipped lazily. A message just committed comes with its entry
and bytes (``relay.queue.Handover``, at most ``HANDOVER_BYTES`` in all, each
until its first attempt): that attempt uses them instead of a thread trip to
read the file back, if the record under the claim has not changed since (no
``.json``). Older messages are never in memory.

Connections. Due ids move to a ready list in queue order; up to
``[relay] max_connections`` connection tasks take them. A task keeps its
upstream session open while there is more ready work for the same account
(several messages per connection), waits up to ``LINGER`` seconds for more
when the list is empty, then says QUIT.

One message (``_attempt``), holding the entry's lock (``QueueStore.claim``;
a busy entry belongs to another process and is looked at again later):
reload the record (it may have changed; or take the hand-over), then

- held, or not yet due: leave it;
- older than ``max_queue_lifetime``: every pending recipient fails (4.4.7);
- else send to the pending recipients: 2xx delivered, 5xx failed at once,
  4xx and any connection, TLS, AUTH or token failure stay pending and are
  tried again after the next interval of ``retry`` (the last one repeats).
  After a session for an account failed to open, other messages for that
  account due in the next ``BROKEN_FOR`` seconds are deferred with the same
  error without a connection of their own: an upstream that is down for a
  day costs one attempt per few seconds, not one per queued message.

The record is saved (atomically) after every attempt. When nothing is
pending the sender gets a DSN for the failed recipients (``relay.dsn``;
never for a null sender), then the entry is removed. A crash after the
upstream said 250 but before the save sends that message again after the
restart: delivery is at least once, never at most once.

An unreadable record is moved to ``queue/corrupt/`` with a log line and
the rest of the queue goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable

from smtpgate.config.durations import format_duration
from smtpgate.config.schema import Config, RelayAccount
from smtpgate.delivery.base import DeliveryError
from smtpgate.delivery.groupcommit import committer
from smtpgate.ops import metrics
from smtpgate.relay.accounts import choose
from smtpgate.relay.bounce import send_dsn
from smtpgate.relay.dsn import upstream_options, wants_report
from smtpgate.relay.entry import CorruptEntry, QueueEntry, Recipient
from smtpgate.relay.flow import InFlowGate
from smtpgate.relay.oauth import TokenClient, TokenError, account_key
from smtpgate.relay.queue import Busy, Handover, Missing, QueueStore
from smtpgate.relay.target import RelayTarget
from smtpgate.relay.upstream import Result, Upstream, UpstreamError

log = logging.getLogger("smtpgate.relay")

POLL = 1.0  # seconds between looks at queue/kick
RESCAN = 60.0  # seconds between full scans (entries of other worker processes)
BUSY_RETRY = 30.0  # seconds before looking again at an entry another process holds
BROKEN_FOR = 5.0  # seconds after a failed connect/TLS/AUTH/token in which others just defer
LINGER = 2.0  # seconds an idle upstream session waits for more mail before QUIT
STOP_GRACE = 10.0  # seconds a stopping deliverer lets transactions in flight finish
HANDOVER_BYTES = 4 * 1024 * 1024  # message bytes held from hand-overs, in all


class Deliverer:
    """Delivers the queue in the background of the server process."""

    def __init__(
        self, config: Config, store: QueueStore, target: RelayTarget, *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.relay = config.relay
        self.store = store
        self.target = target
        self.clock = clock
        self._heap: list[tuple[float, float, str]] = []
        self._due: dict[str, float] = {}
        self._ready: deque[str] = deque()
        self._busy: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._tokens: dict[str, TokenClient] = {}
        self._keys: dict[int, tuple[RelayAccount, str]] = {}  # id(account): it, its _key
        self._handed: dict[str, Handover] = {}  # just committed, not yet attempted
        self._handed_bytes = 0
        self._removing: list[tuple[str, asyncio.Future[DeliveryError | None]]] = []
        self._broken: dict[str, tuple[float, str]] = {}  # account -> (when, why) a session failed
        self._wake = asyncio.Event()
        self._more = asyncio.Event()  # set when ids become ready (wakes idle sessions)
        self._idle = 0  # sessions waiting in _next_ready
        self.flow = InFlowGate(self._backlog, self.relay.max_connections,
                               self.relay.in_flow_delay)
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.target.on_queued = self.notify
        self.target.on_handover = self.hand_over
        if self.relay.in_flow_delay > 0:
            self.target.in_flow = self.flow
        if self.relay.tls == "none":
            log.warning("relay: tls = \"none\": mail and credentials go to %s in clear",
                        self.relay.host)
        elif not self.relay.verify:
            log.warning("relay: verify = false: the certificate of %s is not checked",
                        self.relay.host)
        await asyncio.to_thread(self.store.ensure)
        removed = await asyncio.to_thread(self.store.clean_leftovers)
        if removed:
            log.info("relay: removed %d unacknowledged leftover file(s) from the queue", removed)
        self._main = asyncio.create_task(self._run(), name="smtpgate-relay")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        self._stopping = True
        self.target.on_queued = None
        self.target.on_handover = None
        self.target.in_flow = None
        self.flow.release_all()  # no 250 waits for a deliverer that is going
        self._ready.clear()
        self._handed.clear()
        self._wake.set()
        self._more.set()
        if self._main is not None:
            self._main.cancel()
            await asyncio.wait([self._main], timeout=grace)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def notify(self, queue_id: str) -> None:
        """A new entry is queued (called from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._schedule, queue_id, 0.0, self.clock())

    def hand_over(self, handover: Handover) -> None:
        """A new entry is queued, with its message (called from the committer thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._take_handover, handover, self.clock())

    def _take_handover(self, handover: Handover, received: float) -> None:
        queue_id = handover.entry.id
        if self._stopping:
            return
        if self._handed_bytes + len(handover.message) <= HANDOVER_BYTES:  # else: read back
            self._drop_handover(queue_id)
            self._handed[queue_id] = handover
            self._handed_bytes += len(handover.message)
        self._schedule(queue_id, 0.0, received)

    def _drop_handover(self, queue_id: str) -> Handover | None:
        handover = self._handed.pop(queue_id, None)
        if handover is not None:
            self._handed_bytes -= len(handover.message)
        return handover

    def _backlog(self) -> int:
        """Messages ready for a connection or in flight (``relay.flow``)."""
        self._release_due()  # just queued: still in the heap, not yet in the ready list
        return len(self._busy)  # ready and sending

    # -- the index ---------------------------------------------------------------------------

    def _schedule(self, queue_id: str, when: float, received: float) -> None:
        if self._stopping:
            return
        self._due[queue_id] = when
        heapq.heappush(self._heap, (when, received, queue_id))
        self._wake.set()

    def _forget(self, queue_id: str) -> None:
        self._due.pop(queue_id, None)

    async def _scan(self, *, full: bool = True) -> None:
        """Index the queue; ``full=False`` reads only ids this index does not have."""
        skip = frozenset(self._busy) if full else frozenset(self._due) | self._busy
        entries = await asyncio.to_thread(self._read_index, skip)
        if full:  # the whole queue was read: what the gauges show
            oldest = min((received for _, _, received in entries), default=None)
            metrics.get().queue_state(
                len(entries), 0.0 if oldest is None else max(0.0, self.clock() - oldest))
        for queue_id, when, received in entries:
            if queue_id not in self._busy:
                self._schedule(queue_id, when, received)

    def _read_index(self, skip: frozenset[str]) -> list[tuple[str, float, float]]:
        found: list[tuple[str, float, float]] = []
        for queue_id in self.store.ids():
            if queue_id in skip:
                continue
            try:
                entry = self.store.load(queue_id)
            except Missing:
                continue
            except CorruptEntry as exc:
                self.store.move_corrupt(queue_id, str(exc))
                continue
            if not entry.held:
                found.append((queue_id, entry.next_attempt, entry.received_at))
        return found

    async def _run(self) -> None:
        await self._scan()
        kick, scanned = self.store.kick_mtime(), self.clock()
        looked = time.monotonic()  # at the kick file: once a POLL, not at every new message
        while not self._stopping:
            self._release_due()
            self._spawn()
            wait = POLL
            if self._heap:
                wait = max(0.0, min(wait, self._heap[0][0] - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel
                    await self._wake.wait()
            self._wake.clear()
            if time.monotonic() - looked < POLL:
                continue
            looked = time.monotonic()
            mtime = self.store.kick_mtime()
            if mtime != kick:  # the CLI changed something ("retry now"): read everything again
                kick, scanned = mtime, self.clock()
                self._broken.clear()
                await self._scan()
            elif self.clock() - scanned > RESCAN:  # entries of other worker processes
                scanned = self.clock()
                await self._scan(full=False)

    def _release_due(self) -> None:
        """Everything due now goes to the ready list oldest message first (queue order)."""
        now = self.clock()
        due: list[tuple[float, str]] = []
        while self._heap and self._heap[0][0] <= now:
            when, received, queue_id = heapq.heappop(self._heap)
            if self._due.get(queue_id) == when and queue_id not in self._busy:
                self._forget(queue_id)
                self._busy.add(queue_id)
                due.append((received, queue_id))
        self._ready.extend(queue_id for _, queue_id in sorted(due))

    def _spawn(self) -> None:
        if self._ready:
            self._more.set()
        while (self._ready and len(self._workers) < self.relay.max_connections
               and len(self._ready) > self._idle):
            task = asyncio.create_task(self._connection_worker())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _next_ready(self) -> str | None:
        """The next ready id; an idle session waits up to ``LINGER`` seconds for one."""
        if not self._ready and not self._stopping:
            self._idle += 1
            self._more.clear()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINGER):
                        await self._more.wait()
            finally:
                self._idle -= 1
        if self._stopping or not self._ready:
            return None
        return self._ready.popleft()

    # -- connections -------------------------------------------------------------------------

    async def _connection_worker(self) -> None:
        session: list[tuple[str, Upstream]] = []  # at most one: (account key, open upstream)
        try:
            while (queue_id := await self._next_ready()) is not None:
                try:
                    await self._attempt(queue_id, session)
                except Exception:
                    log.exception("queue=%s delivery attempt failed unexpectedly", queue_id)
                    self._schedule(queue_id, self.clock() + BUSY_RETRY, 0.0)
                finally:
                    self._busy.discard(queue_id)
                    self.flow.progressed()
        finally:
            for _, upstream in session:
                await upstream.close()

    async def _upstream(self, account: RelayAccount, session: list[tuple[str, Upstream]]
                        ) -> Upstream:
        key = self._key(account)
        if session and (session[0][0] != key or not session[0][1].alive):
            await session.pop()[1].close()
        if session:
            return session[0][1]
        upstream = Upstream(self.relay, account, self.config.hostname, self._token_client(account))
        try:  # (a bad ca_file raises UpstreamError above, before any connection)
            await upstream.open()
        except (TokenError, UpstreamError) as exc:
            await upstream.close()
            error = exc if isinstance(exc, UpstreamError) else UpstreamError("token", str(exc))
            self._broken[key] = (self.clock(), str(error))
            raise error from None
        self._broken.pop(key, None)
        session.append((key, upstream))
        return upstream

    def _key(self, account: RelayAccount) -> str:
        """``_key``, once per account (the accounts are fixed for the deliverer's life)."""
        known = self._keys.get(id(account))
        if known is None or known[0] is not account:
            known = self._keys[id(account)] = (account, _key(account))
        return known[1]

    def _token_client(self, account: RelayAccount) -> TokenClient | None:
        if account.auth not in ("xoauth2", "oauthbearer"):
            return None
        key = account_key(account)
        if key not in self._tokens:
            self._tokens[key] = TokenClient(account, self.config.data_dir, clock=self.clock)
        return self._tokens[key]

    # -- one message -------------------------------------------------------------------------

    async def _attempt(self, queue_id: str, session: list[tuple[str, Upstream]]) -> None:
        handover = self._drop_handover(queue_id)  # one attempt only, whatever happens
        try:
            with self.store.claim(queue_id) as changed:
                entry, message = await self._read(queue_id, changed, handover)
                await self._deliver(entry, message, session)
        except Busy:
            self._schedule(queue_id, self.clock() + BUSY_RETRY, 0.0)
        except Missing:
            self._forget(queue_id)
        except CorruptEntry as exc:
            await asyncio.to_thread(self.store.move_corrupt, queue_id, str(exc))

    async def _read(self, queue_id: str, changed: bool, handover: Handover | None
                    ) -> tuple[QueueEntry, bytes | None]:
        """The entry, and its message if due: the hand-over if the record under our claim
        is still the one its commit wrote, else both read back (in a thread)."""
        if handover is not None and not changed:
            entry = handover.entry
            return entry, handover.message if entry.due(self.clock()) else None
        return await asyncio.to_thread(self.store.read_if_due, queue_id, self.clock())

    async def _deliver(self, entry: QueueEntry, message: bytes | None,
                       session: list[tuple[str, Upstream]]) -> None:
        now = self.clock()
        if entry.held:
            return
        if not entry.pending:
            await self._finish(entry)
            return
        if not entry.due(now):  # scheduled for later
            self._schedule(entry.id, entry.next_attempt, entry.received_at)
            return
        if now - entry.received_at >= self.relay.max_queue_lifetime:
            self._expire(entry)
            await self._finish(entry)
            return
        account = choose(self.relay.accounts, entry.mail_from)
        if account is None:
            await self._defer(entry, "no [[relay.account]] matches the sender")
            return
        broken = self._broken.get(self._key(account))
        if broken is not None and self.clock() - broken[0] < BROKEN_FOR:
            await self._defer(entry, broken[1])  # the session just failed: do not hammer
            return
        if message is None:  # it became due since it was read
            message = await asyncio.to_thread(self.store.read_message, entry.id)
        try:
            upstream = await self._upstream(account, session)
            results = await upstream.send(entry.mail_from, [r.address for r in entry.pending],
                                          message, upstream_options(entry))
        except UpstreamError as exc:
            await self._defer(entry, str(exc))
            return
        self._apply(entry, results)
        if entry.pending:
            await self._defer(entry, "; ".join(sorted({r.reply for r in entry.pending})))
        else:
            await self._finish(entry)

    def _apply(self, entry: QueueEntry, results: dict[str, Result]) -> None:
        for recipient in entry.pending:
            result = results.get(recipient.address)
            if result is None:
                continue
            recipient.reply, recipient.remote_mta = str(result), self.relay.host
            if 200 <= result.code < 300:
                recipient.status = "delivered"
                metrics.get().delivery("delivered")
                log.info("queue=%s to=<%s> relay=%s status=sent (%s)", entry.id,
                         recipient.address, self.relay.host, result)
            elif 500 <= result.code < 600:
                recipient.status = "failed"
                metrics.get().delivery("bounced")
                log.info("queue=%s to=<%s> relay=%s status=bounced (%s)", entry.id,
                         recipient.address, self.relay.host, result)

    def _expire(self, entry: QueueEntry) -> None:
        for recipient in entry.pending:
            recipient.status = "failed"  # the DSN keeps its last reply, or says 4.4.7
        entry.extra["expired"] = f"gave up after {format_duration(self.relay.max_queue_lifetime)}"
        log.info("queue=%s status=expired after %d attempt(s)", entry.id, entry.attempts)

    async def _defer(self, entry: QueueEntry, reason: str) -> None:
        now = self.clock()
        entry.attempts += 1
        metrics.get().delivery("deferred")
        entry.last_error = " ".join(reason.split())[:500]
        schedule = self.relay.retry
        delay = schedule[min(entry.attempts - 1, len(schedule) - 1)]
        expiry = entry.received_at + self.relay.max_queue_lifetime
        entry.next_attempt = min(now + delay, max(expiry, now))
        await self._maybe_warn(entry, now)
        await asyncio.to_thread(self.store.save, entry)
        self._schedule(entry.id, entry.next_attempt, entry.received_at)
        log.info("queue=%s status=deferred attempt=%d next_in=%ds: %s", entry.id,
                 entry.attempts, round(entry.next_attempt - now), entry.last_error)

    async def _maybe_warn(self, entry: QueueEntry, now: float) -> None:
        warn_after = self.relay.delay_warning
        if not warn_after or entry.delay_warned or not entry.mail_from:
            return
        if now - entry.received_at < warn_after:
            return
        entry.delay_warned = True
        asked = [r for r in entry.pending if wants_report(r, "delayed")]  # RFC 3461 NOTIFY
        for recipient in asked:
            recipient.reply = recipient.reply or f"451 4.4.1 {entry.last_error}"
        if asked:
            await self._bounce(entry, asked, "delayed")

    async def _finish(self, entry: QueueEntry) -> None:
        failed = entry.failed
        asked = [r for r in failed if wants_report(r, "failed")]  # RFC 3461 NOTIFY
        if asked and entry.mail_from:
            await self._bounce(entry, asked, "failed")
        elif failed and entry.mail_from:
            log.info("queue=%s no bounce: NOTIFY did not ask for one", entry.id)
        elif failed:
            log.info("queue=%s a bounce could not be delivered; not bounced again", entry.id)
        await self._remove(entry.id)
        self._forget(entry.id)
        # All delivered: each recipient's status=sent line said so already.
        log.log(logging.INFO if failed else logging.DEBUG, "queue=%s removed: %d delivered, "
                "%d failed", entry.id, len(entry.recipients) - len(failed), len(failed))

    async def _remove(self, queue_id: str) -> None:
        """Remove the entry in the next group commit (still under our claim); raise its
        ``DeliveryError`` if that failed. Removals asked for in one turn of the event loop
        go as one job: one wake-up of the committer thread, not one each."""
        loop = asyncio.get_running_loop()
        removed: asyncio.Future[DeliveryError | None] = loop.create_future()
        if not self._removing:
            loop.call_soon(self._submit_removals, loop)
        self._removing.append((queue_id, removed))
        error = await removed
        if error is not None:
            raise error

    def _submit_removals(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._removing = self._removing, []
        job = self.store.removal(*(queue_id for queue_id, _ in batch))

        def done(_: DeliveryError | None) -> None:  # in the committer thread
            outcomes = [(removed, job.outcome(queue_id)) for queue_id, removed in batch]
            loop.call_soon_threadsafe(_set_results, outcomes)

        committer().submit(job, done)

    async def _bounce(self, entry: QueueEntry, recipients: list[Recipient], action: str) -> None:
        now = self.clock()
        dsn_id, queued = await asyncio.to_thread(
            send_dsn, self.store, self.target, entry, recipients, action,
            hostname=self.config.hostname, now=now,
        )
        if queued:
            self._schedule(dsn_id, now, now)
        log.info("queue=%s dsn=%s action=%s to=<%s>", entry.id, dsn_id, action, entry.mail_from)


def _key(account: RelayAccount) -> str:
    return account_key(account) + "\0" + account.username + "\0" + account.auth


def _set_results(outcomes: list[tuple[asyncio.Future[DeliveryError | None],
                                     DeliveryError | None]]) -> None:
    for future, error in outcomes:
        if not future.done():  # cancelled: the deliverer is stopping
            future.set_result(error)
