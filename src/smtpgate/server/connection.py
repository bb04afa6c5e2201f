"""One client connection: the asyncio Protocol that hosts a Session.

Theory of operation
-------------------
Bytes from the socket go through the PROXY gate and TLS (if any) into the
pure ``Session``; its events are dispatched here. Quick events (MAIL, RCPT,
body chunks, an AUTH step the conversation can answer at once: a challenge or
a warm login) are answered inline. Slow ones -- any other AUTH step (store,
Argon2, failure delay) and, on a blocking delivery target, the start and end
of a message -- run as a task while reading is paused; the session keeps
pipelined input and resumes when the task answers. Each batch of replies
goes out in one write (RFC 2920). The server is known only through a
``ConnectionContext`` (``server/context.py``); each message is a
``Transaction`` (``server/transaction.py``); timeouts live in
``server/deadline.py``.

STARTTLS: the 220 goes out in plaintext, then TLS (``server/connection_tls.py``)
takes over the socket and, once its handshake completes, a *new* Session starts:
whatever the client pipelined after STARTTLS died with the old one (RFC 3207).

PROXY protocol (``proxy_protocol = true``): before anything else -- limits,
greeting, TLS -- a trusted balancer's header names the real client, whose
address then counts everywhere; anything else closes without a reply
(``server/proxy_gate.py``). On plain TCP neither costs more than a ``None`` check.

Flow control: when the client does not read our replies and the send buffer
passes its high-water mark, reading stops until it drains (RFC 2920 section
3.1); a closed connection whose replies are still queued is aborted after
``CLOSE_GRACE`` seconds.

Faults: every asyncio callback and slow step is ``guarded``: an exception
that escapes ends this client with ``421 4.3.0`` and one log line naming its
type (never a traceback, which could carry client data); the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from smtpgate.auth.service import Conversation, Peer, Turn
from smtpgate.config.schema import ListenerConfig
from smtpgate.credentials.base import Account
from smtpgate.delivery.base import InFlow
from smtpgate.ops import metrics
from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session
from smtpgate.server.connection_tls import ConnectionTls, start_tls
from smtpgate.server.context import ConnectionContext, is_trusted
from smtpgate.server.deadline import Deadline
from smtpgate.server.guard import guarded
from smtpgate.server.ids import next_session_id
from smtpgate.server.proxy_gate import Client, ProxyGate, open_gate
from smtpgate.server.transaction import Transaction, build_envelope, message_open

log = logging.getLogger("smtpgate.server")
CLOSE_GRACE = 5.0  # seconds a closed connection may take to deliver its last replies
# RFC 3463 4.3.0 "other or undefined mail system status"; 421 closes (RFC 5321 3.8).
T = TypeVar("T")


class Connection(asyncio.Protocol):
    def __init__(
        self, context: ConnectionContext, listener: ListenerConfig, live: set[Connection]
    ) -> None:
        self.context = context
        self.listener = listener
        self.live = live  # the server's set of admitted connections, for shutdown
        self.id = next_session_id()
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.peer = ""
        self.trusted = False  # the client is in the listener's trusted_networks
        self.session: Session | None = None
        self.tls: ConnectionTls | None = None  # server/connection_tls.py
        self.conversation: Conversation | None = None
        self.account: Account | None = None  # proven at the session's AUTH (server/senders.py)
        self.auth_failures = 0  # failed AUTHs on this connection: they survive STARTTLS
        self.transaction: Transaction | None = None
        self.task: asyncio.Future[None] | None = None  # the slow step under way
        self.closing = False
        self.admitted = False
        # The loop, asked once: Python 3.11's get_running_loop() makes a getpid system
        # call each time, and a message asked for it twice.
        self.loop = asyncio.get_running_loop()
        self.deadline = Deadline(self._expired, self.loop)
        self._write_paused = False  # the client is not reading our replies
        self._hold_output = False  # see _run
        self.stats = metrics.get().listener(listener.address)  # bound once: no lookups later
        self.proxy: ProxyGate | None = None  # until the PROXY header is read (server/proxy_gate.py)

    # -- asyncio callbacks ---------------------------------------------------
    @guarded
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        peername = transport.get_extra_info("peername") or ("?", 0)
        self.ip = str(peername[0])
        self.peer = f"[{self.ip}]:{peername[1]}"
        if self.listener.proxy_protocol:
            self.proxy = open_gate(transport, self.ip, self.peer, self.listener.trusted_proxies,
                                   admit=self._proxied, crash=self.crash)
        else:
            self._admit()

    def _admit(self) -> None:
        """Take a connection slot for ``self.ip``, then greet or start implicit TLS."""
        transport = self.transport
        assert transport is not None
        refused = self.context.admission.admit(self.ip)
        if refused is not None:
            log.info("refused %s: %s", self.peer, refused)
            if self.listener.tls != "implicit":
                transport.write(r.TOO_MANY_CONNECTIONS.to_bytes())
            transport.close()
            return
        self.admitted = True
        self.live.add(self)
        self.stats.open.inc()
        self.stats.total.inc()
        self.trusted = is_trusted(self.listener, self.ip)
        log.info("session=%s connect from %s on %s%s", self.id, self.peer, self.listener.address,
                 " (trusted network)" if self.trusted else "")
        if self.listener.tls == "implicit":
            self._start_tls()
        else:
            self._new_session(greet=True)
        self.deadline.start()

    @guarded
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.proxy is not None:
            data = self.proxy.feed(data)
            if not data or self.closing:
                return
        if self.tls is not None:
            data = self.tls.decrypt(data)
            if not data or self.closing:
                return
        session = self.session
        if session is None:
            return
        session.receive_data(data)
        if session.in_data:
            self.deadline.touch(self.context.limits.data_timeout)
        if self.task is None:
            self._pump()

    def eof_received(self) -> bool | None:
        # Reading is paused while a slow step runs, so EOF arrives only after it.
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.deadline.stop()
        if self.proxy is not None:
            self.proxy.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._end_transfer()
        if self.admitted:
            self.admitted = False
            self.live.discard(self)
            self.context.admission.release(self.ip)
            self.stats.open.dec()
            if self.tls is not None:
                self.tls.release()
            log.info("session=%s disconnect from %s", self.id, self.peer)

    def crash(self, exc: BaseException) -> None:
        """Something escaped our handling of this client: 421 4.3.0, close, one log line."""
        log.error("session=%s internal error: %s", self.id, type(exc).__name__)
        try:
            self._end_transfer()
            if self.session is not None and not self.session.closed:
                self.session.close_with(r.INTERNAL_ERROR)
                self._flush()
            self._close()
        except Exception:  # beyond repair: drop the socket
            if self.transport is not None:
                self.transport.abort()

    # -- flow control: a client that pipelines and never reads (RFC 2920 3.1) ---
    def pause_writing(self) -> None:
        """Our send buffer is over the high-water mark: stop reading commands."""
        self._write_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.task is None:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- the session loop -----------------------------------------------------
    def _pump(self) -> None:
        """Handle events until the session needs input or a slow step starts."""
        session = self.session
        while session is not None and self.task is None and not self.closing:
            event = session.next_event()
            if event is None:
                break
            self._handle(session, event)
            session = self.session
        if session is not None and self.transaction is not None and not message_open(session):
            self._end_transfer()  # RSET, or a refused BDAT chunk, ended the message
        if self.task is None or not self._hold_output:
            self._flush()

    def _handle(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.DataChunk):
            if self.transaction is not None:
                self.transaction.write(event.data)
        elif isinstance(event, ev.MailFrom):
            self._mail_from(session, event.address)
        elif isinstance(event, ev.RcptTo):
            self._rcpt(session, event.address)
        elif isinstance(event, ev.DataStart):
            self._begin_message(session)
        elif isinstance(event, ev.DataEnd):
            self._end_message(session, event)
        elif isinstance(event, ev.AuthStart):
            self._auth(self._conversation().begin(event.mechanism, event.initial, event.problem))
        elif isinstance(event, ev.AuthResponse):
            self._auth(self._conversation().answer(event.data))
        elif isinstance(event, ev.AuthAborted):
            self._auth(self._conversation().abort(event.reason))
        elif isinstance(event, ev.StartTls):
            self._flush()
            self._start_tls()
        elif isinstance(event, ev.Closed):
            self._flush()
            self._close()

    def _flush(self) -> None:
        session = self.session
        if session is None or self.transport is None:
            return
        out = session.data_to_send()
        if not out:
            return
        if session.refusals:
            for verb, code in session.refusals:
                log.info("session=%s peer=%s command=%s reply=%d", self.id, self.peer, verb, code)
            session.refusals.clear()
        limits = self.context.limits
        self.deadline.touch(limits.data_timeout if session.in_data else limits.command_timeout)
        self._send(out)

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        if self.tls is not None:
            self.tls.send(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def _run(self, coro: Coroutine[Any, Any, None], *, hold_output: bool = False) -> None:
        """Run a slow step; input waits in the session until it is done. ``hold_output``:
        queued replies wait for the step's, so a batch still goes out in one write.

        Always in a task, even a step that will not wait: code it calls may need the
        current task (``asyncio.timeout`` in the PostgreSQL pool and redis-py raise
        RuntimeError without one), and Python 3.11 has no eager task factory."""
        self._wait(self.loop.create_task(coro), hold_output=hold_output)

    def _wait(self, step: asyncio.Future[None], *, hold_output: bool = False) -> None:
        """``_run`` for a step already under way (a future someone else completes)."""
        assert self.transport is not None
        self._hold_output = hold_output
        self.transport.pause_reading()
        self.task = step
        step.add_done_callback(self._step_done)

    def _off_loop(self, blocking: bool, work: Callable[[], T], answer: Callable[[T], None]) -> None:
        """``answer(work())``, with ``work`` in a worker thread when it may block."""
        if not blocking:
            answer(work())
            return

        async def step() -> None:
            answer(await asyncio.to_thread(work))

        self._run(step(), hold_output=True)

    @guarded
    def _step_done(self, task: asyncio.Future[None]) -> None:
        self.task = None
        if self.closing or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crash(exc)
            return
        if not self._write_paused:
            self._resume_reading()
        self._pump()

    # -- AUTH -------------------------------------------------------------------
    def _conversation(self) -> Conversation:
        if self.conversation is None:
            bindings = self.tls.channel_bindings() if self.tls is not None else None
            peer = Peer(self.ip, self.tls is not None, bindings, self.id, self.listener.address)
            self.conversation = self.context.auth_for(self.listener).conversation(peer)
            self.conversation.failures = self.auth_failures
        return self.conversation

    def _auth(self, step: Turn | Awaitable[Turn]) -> None:
        """Answer an AUTH step: at once when the conversation had its turn ready (a warm
        login), else once the slow step is done."""
        if isinstance(step, Turn):
            self._take_turn(step)
            return

        async def answer() -> None:
            self._take_turn(await step)

        self._run(answer())

    def _take_turn(self, turn: Turn) -> None:
        session = self.session
        if session is None:
            return
        if turn.challenge is not None:
            session.auth_challenge(turn.challenge)
        else:
            assert turn.reply is not None
            self.account = turn.account
            session.auth_finish(turn.reply, turn.user)

    # -- the mail transaction ------------------------------------------------------
    def _mail_from(self, session: Session, sender: str) -> None:
        deliveries, user = self.context.deliveries, session.user
        account = self.account if user is not None else None  # STARTTLS forgets the AUTH

        def answer(refusal: Reply | None) -> None:
            if refusal is None:
                session.accept()
            else:
                session.reject(refusal)

        self._off_loop(
            deliveries.sender_check_blocks(account),
            lambda: deliveries.check_sender(account, user or "", sender),
            answer,
        )

    def _rcpt(self, session: Session, address: str) -> None:
        deliveries = self.context.deliveries
        may_relay = session.user is not None or self.trusted
        refusal = deliveries.check_recipient(address, may_relay=may_relay)
        if refusal is None:
            session.accept()
        else:
            session.reject(refusal)

    def _begin_message(self, session: Session) -> None:
        self._end_transfer()
        envelope = build_envelope(
            session, session_id=self.id, peer=self.peer, tls=self.tls is not None,
            trusted_network=self.trusted and session.user is None,
        )
        txn = self.context.deliveries.transaction(envelope)
        self.transaction = txn
        self.deadline.begin_transfer(self.context.limits.max_data_time)

        def answer(refusal: Reply | None) -> None:
            if refusal is None:
                session.accept()
            else:
                self._end_transfer()
                session.reject(refusal)

        self._off_loop(txn.blocking, txn.begin, answer)

    def _end_message(self, session: Session, event: ev.DataEnd) -> None:
        txn, self.transaction = self.transaction, None
        self.deadline.end_transfer()
        rejection = event.rejection if isinstance(event.rejection, Reply) else None
        if txn is None:  # the start was refused: the session answers with its rejection
            session.reply(rejection or r.LOCAL_ERROR)
            return
        if rejection is None and txn.group_commit:
            self._commit_in_group(txn, session)
            return
        blocking = txn.blocking and rejection is None
        self._off_loop(blocking, lambda: txn.end(rejection), session.reply)

    def _commit_in_group(self, txn: Transaction, session: Session) -> None:
        """Answer once the group commit holding this message is durable (input waits)."""
        loop = self.loop
        committed: asyncio.Future[None] = loop.create_future()
        flow = self.context.deliveries.in_flow

        def answer(reply: Reply) -> None:  # in the committer thread
            loop.call_soon_threadsafe(_answer, committed, session, reply, flow)

        self._wait(committed, hold_output=True)
        txn.end_in_group(answer)

    def _end_transfer(self) -> None:
        """Throw away the message being received, if any."""
        txn, self.transaction = self.transaction, None
        self.deadline.end_transfer()
        if txn is not None:
            txn.abort()

    # -- PROXY protocol and TLS (server/proxy_gate.py, server/connection_tls.py) ----
    def _proxied(self, client: Client) -> bool:
        """The PROXY header is read: the client it names is ours; admit it."""
        self.proxy = None
        if client is not None:
            self.ip = client[0]
            self.peer = f"[{self.ip}]:{client[1]}"
        self._admit()
        return self.admitted

    def _start_tls(self) -> None:
        self.session = None  # RFC 3207 section 4.2: the old session and its input die here
        if self.conversation is not None:  # ... but max_failures_per_connection counts on
            self.auth_failures = self.conversation.failures
        self.conversation = None
        assert self.transport is not None
        self.tls = start_tls(self.context, self.listener, self.transport, self.id,
                             secured=self._secured, close=self._close)
        if self.tls is not None:
            self.deadline.touch(self.context.limits.command_timeout)

    def _secured(self) -> None:
        """The TLS handshake is done: a new session, greeted at once on implicit TLS."""
        self._new_session(greet=self.listener.tls == "implicit")

    def _new_session(self, *, greet: bool) -> None:
        params = self.context.session_params(
            self.listener, self.tls is not None, trusted=self.trusted
        )
        self.session = Session(params)
        if greet:
            self.session.greet()
            self._flush()
        self.deadline.touch(self.context.limits.command_timeout)

    # -- timeouts and closing ----------------------------------------------------------
    @guarded
    def _expired(self, transfer: bool) -> bool:
        """A deadline passed: 421 4.4.2 and close, unless a slow step is still running."""
        if self.closing:
            return True
        if self.task is not None:
            return False
        log.info("session=%s %s", self.id, "max_data_time" if transfer else "timeout")
        self._end_transfer()  # nothing of a message cut short is kept
        if self.session is not None:
            self.session.close_with(r.TRANSFER_TOO_SLOW if transfer else r.TIMEOUT)
            self._flush()
        self._close()
        return True

    def shutdown(self) -> None:
        """Server stopping: tell an idle client, then close (DATA is left to finish)."""
        if self.session is not None and not self.session.in_data and self.task is None:
            self.session.shutdown()
            self._flush()
            self._close()

    @property
    def busy(self) -> bool:
        return self.task is not None or (self.session is not None and self.session.in_data)

    def _close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.tls is not None:
            self.tls.close_notify()
        if self.transport is not None:
            self.transport.close()  # flushes what is queued first...
            if self.transport.get_write_buffer_size():  # ...unless the client never reads
                grace = min(CLOSE_GRACE, self.context.limits.command_timeout)
                self.deadline.stop()
                self.loop.call_later(grace, self.transport.abort)


def _answer(step: asyncio.Future[None], session: Session, reply: Reply,
            flow: InFlow | None = None) -> None:
    """The commit's reply, unless the connection was lost meanwhile (``step`` cancelled).
    While the relay is behind, a 250 first waits for it (``InFlow``: in_flow_delay)."""
    if step.done():
        return
    if flow is not None and reply.code == 250 and flow.behind():
        flow.when_caught_up(lambda: _answer(step, session, reply))
        return
    try:
        session.reply(reply)
    except Exception as exc:  # _step_done ends this client with 421, as for any step
        step.set_exception(exc)
        return
    step.set_result(None)
