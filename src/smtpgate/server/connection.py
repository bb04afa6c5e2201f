"""One client connection: the asyncio Protocol that hosts a Session.

Theory of operation
-------------------
Bytes from the socket go through the TLS layer (if any) into the pure
``Session``; its events are handled here. Quick events (MAIL, RCPT, body
chunks) are answered inline. Slow ones — an AUTH step (store lookups, Argon2
in a thread, failure delays) and the end of DATA (fsync in a thread) — run as
a task while reading is paused; the session keeps any pipelined input and
resumes when the task answers. After each batch, everything the session
queued goes out in a single write (RFC 2920).

STARTTLS: the 220 goes out in plaintext, then a TlsLayer takes over the
socket and, once its handshake completes, a *new* Session starts: whatever the
client pipelined after STARTTLS died with the old session (RFC 3207).

Timeouts: in the command phase a whole command must arrive within
``command_timeout`` of our last reply (so a one-byte-a-second client is cut
off); in DATA each read resets ``data_timeout``; a TLS handshake must finish
within ``command_timeout`` of its start.

Flow control: when the client does not read our replies and the transport's
send buffer passes its high-water mark (``pause_writing``), reading stops
until it drains, so a pipelining flood (RFC 2920 section 3.1) costs at most one
read's worth of replies; a client that never reads is cut off by the timeout,
and a closed connection whose replies are still queued is aborted after
``CLOSE_GRACE`` seconds, so it cannot hold its slot and buffers forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from smtpgate.auth.service import Conversation, Peer, Turn
from smtpgate.delivery.base import Delivery, DeliveryError, Envelope
from smtpgate.delivery.received import received_header
from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session, SessionParams
from smtpgate.server.tls import TlsError, TlsLayer

if TYPE_CHECKING:
    from smtpgate.config.schema import ListenerConfig
    from smtpgate.server.app import Server

log = logging.getLogger("smtpgate.server")
_ID_PREFIX = secrets.token_hex(3)  # per process: ids stay unique across workers and restarts
_ID_COUNTER = itertools.count(1)


def next_session_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):06x}"
CLOSE_GRACE = 5.0  # seconds a closed connection may take to deliver its last replies


class Connection(asyncio.Protocol):
    def __init__(self, server: Server, listener: ListenerConfig) -> None:
        self.server = server
        self.listener = listener
        self.id = next_session_id()
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.peer = ""
        self.session: Session | None = None
        self.tls: TlsLayer | None = None
        self.conversation: Conversation | None = None
        self.auth_failures = 0  # failed AUTHs on this connection: they survive STARTTLS
        self.delivery: Delivery | None = None
        self.delivery_failed: DeliveryError | None = None
        self.task: asyncio.Task[None] | None = None
        self.transactions = 0
        self.closing = False
        self.admitted = False
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the armed timer fires (monotonic)
        self._write_paused = False  # the client is not reading our replies

    # -- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        peername = transport.get_extra_info("peername") or ("?", 0)
        self.ip = str(peername[0])
        self.peer = f"[{self.ip}]:{peername[1]}"
        if not self.server.admit(self):
            if self.listener.tls != "implicit":
                transport.write(r.TOO_MANY_CONNECTIONS.to_bytes())
            transport.close()
            return
        self.admitted = True
        log.info("session=%s connect from %s on %s", self.id, self.peer, self.listener.address)
        if self.listener.tls == "implicit":
            self._start_tls()
        else:
            self._new_session(greet=True)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.tls is not None:
            data = self._decrypt(data)
            if not data or self.closing:
                return
        session = self.session
        if session is None:
            return
        session.receive_data(data)
        if session.in_data:
            self._touch(self.server.config.limits.data_timeout)
        if self.task is None:
            self._pump()

    def eof_received(self) -> bool | None:
        # Reading is paused while a slow step runs, so EOF arrives only after it.
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._abort_delivery()
        if self.admitted:
            self.server.release(self)
            log.info("session=%s disconnect from %s", self.id, self.peer)

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
        self._flush()

    def _handle(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.DataChunk):
            self._write_body(event.data)
        elif isinstance(event, ev.MailFrom | ev.RcptTo):
            session.accept()
        elif isinstance(event, ev.DataStart):
            self._start_delivery(session)
        elif isinstance(event, ev.DataEnd):
            self._end_data(session, event)
        elif isinstance(event, ev.AuthStart):
            self._auth(self._conversation().start(event.mechanism, event.initial, event.problem))
        elif isinstance(event, ev.AuthResponse):
            self._auth(self._conversation().respond(event.data))
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
        limits = self.server.config.limits
        self._touch(limits.data_timeout if session.in_data else limits.command_timeout)
        self._send(out)

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        if self.tls is not None:
            try:
                self.tls.write_plaintext(data)
            except TlsError:
                self._close()
                return
            data = self.tls.outgoing()
        if not self.transport.is_closing():
            self.transport.write(data)

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a slow step; input waits in the session until it is done."""
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(coro)
        self.task = task
        task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if self.closing or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("session=%s internal error: %s", self.id, type(exc).__name__)
            if self.session is not None:
                self.session.close_with(r.LOCAL_ERROR.with_text("Internal error, closing"))
        if not self._write_paused:
            self._resume_reading()
        self._pump()

    # -- AUTH -------------------------------------------------------------------
    def _conversation(self) -> Conversation:
        if self.conversation is None:
            bindings = self.tls.channel_bindings() if self.tls is not None else None
            peer = Peer(self.ip, self.tls is not None, bindings, self.id)
            self.conversation = self.server.auth.conversation(peer)
            self.conversation.failures = self.auth_failures
        return self.conversation

    def _auth(self, step: Awaitable[Turn]) -> None:
        self._run(self._auth_step(step))

    async def _auth_step(self, step: Awaitable[Turn]) -> None:
        turn = await step
        session = self.session
        if session is None:
            return
        if turn.challenge is not None:
            session.auth_challenge(turn.challenge)
        else:
            assert turn.reply is not None
            session.auth_finish(turn.reply, turn.user)

    # -- DATA -------------------------------------------------------------------
    def _start_delivery(self, session: Session) -> None:
        self.transactions += 1
        envelope = self._envelope(session)
        try:
            self.delivery = self.server.delivery.start(envelope)
            self.delivery_failed = None
            cfg = self.server.config
            header = received_header(
                envelope,
                hostname=cfg.hostname,
                show_user=cfg.auth.show_user_in_received,
                message_id=f"{self.id}.{self.transactions}",
            )
            self.delivery.write(header)
        except DeliveryError as exc:
            self._abort_delivery()
            session.reject(_delivery_reply(exc))
            return
        session.accept()

    def _write_body(self, data: bytes) -> None:
        if self.delivery is None or self.delivery_failed is not None:
            return
        try:
            self.delivery.write(data)
        except DeliveryError as exc:
            self.delivery_failed = exc

    def _end_data(self, session: Session, event: ev.DataEnd) -> None:
        if isinstance(event.rejection, Reply):
            self._abort_delivery()
            log.info("session=%s message rejected: %s", self.id, event.rejection.code)
            session.reply(event.rejection)
            return
        if self.delivery_failed is not None or self.delivery is None:
            failure = self.delivery_failed or DeliveryError("no delivery")
            self._abort_delivery()
            session.reply(_delivery_reply(failure))
            return
        delivery, self.delivery = self.delivery, None
        if self.server.delivery.blocking:  # fsync: off the event loop
            self._run(self._commit_in_thread(session, delivery))
        else:
            self._answer_commit(session, _commit(delivery))

    async def _commit_in_thread(self, session: Session, delivery: Delivery) -> None:
        self._answer_commit(session, await asyncio.to_thread(_commit, delivery))

    def _answer_commit(self, session: Session, error: DeliveryError | None) -> None:
        if error is not None:
            log.warning("session=%s delivery failed: %s", self.id, error)
            session.reply(_delivery_reply(error))
            return
        log.info(
            "session=%s message accepted from=<%s> rcpts=%d",
            self.id, session.transaction.sender, len(session.transaction.recipients),
        )
        session.reply(r.MESSAGE_ACCEPTED)

    def _abort_delivery(self) -> None:
        if self.delivery is not None:
            delivery, self.delivery = self.delivery, None
            try:
                delivery.abort()
            except DeliveryError:
                log.warning("session=%s could not clean up an aborted delivery", self.id)

    def _envelope(self, session: Session) -> Envelope:
        transaction = session.transaction
        params = transaction.params
        body = params.get("BODY")
        return Envelope(
            session_id=self.id,
            peer=self.peer,
            helo=session.helo,
            esmtp=session.esmtp,
            tls=self.tls is not None,
            authenticated_user=session.user,
            mail_from=transaction.sender or "",
            recipients=tuple(transaction.recipients),
            auth_param=params.get("AUTH"),
            body=body.upper() if body else None,
            smtputf8="SMTPUTF8" in params,
            received_at=time.time(),
        )

    # -- TLS ---------------------------------------------------------------------
    def _start_tls(self) -> None:
        self.session = None  # RFC 3207 section 4.2: the old session and its input die here
        if self.conversation is not None:  # ... but max_failures_per_connection counts on
            self.auth_failures = self.conversation.failures
        self.conversation = None
        self.tls = TlsLayer(self.server.tls_context())
        self._touch(self.server.config.limits.command_timeout)

    def _decrypt(self, data: bytes) -> bytes:
        tls = self.tls
        assert tls is not None
        was_done = tls.handshake_done
        tls.receive_ciphertext(data)
        try:
            plaintext = tls.read_plaintext()
        except TlsError as exc:
            log.info("session=%s TLS failed: %s", self.id, exc)
            self._send_raw(tls.outgoing())
            self._close()
            return b""
        self._send_raw(tls.outgoing())
        if not was_done and tls.handshake_done:
            log.info("session=%s TLS %s %s", self.id, tls.version, tls.cipher)
            self._new_session(greet=self.listener.tls == "implicit")
        if tls.closed:
            self._close()
        return plaintext

    def _send_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _new_session(self, *, greet: bool) -> None:
        cfg = self.server.config
        tls_active = self.tls is not None
        params = SessionParams(
            hostname=cfg.hostname,
            tls_active=tls_active,
            starttls_offered=self.listener.tls == "starttls" and not tls_active,
            require_auth=self.listener.require_auth,
            auth_mechanisms=self.server.auth.advertised(tls_active),
            max_message_size=cfg.limits.max_message_size,
            max_recipients=cfg.limits.max_recipients,
            max_errors=cfg.limits.max_errors,
        )
        self.session = Session(params)
        if greet:
            self.session.greet()
            self._flush()
        self._touch(cfg.limits.command_timeout)

    # -- timers and closing ------------------------------------------------------------
    def _touch(self, seconds: float) -> None:
        """Move the deadline; the timer is re-armed only if it would now fire late."""
        self._deadline = time.monotonic() + seconds
        if self._timer is not None and self._deadline < self._timer_at and not self.closing:
            self._timer.cancel()
            self._arm_timer()

    def _arm_timer(self) -> None:
        delay = max(0.05, self._deadline - time.monotonic())
        self._timer_at = time.monotonic() + delay
        self._timer = asyncio.get_running_loop().call_later(delay, self._check_timeout)

    def _check_timeout(self) -> None:
        if self.closing:
            return
        if self.task is None and time.monotonic() >= self._deadline:
            log.info("session=%s timeout", self.id)
            if self.session is not None:
                self.session.timeout()
                self._flush()
            self._close()
            return
        self._arm_timer()

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
            self.tls.shutdown()
            self._send_raw(self.tls.outgoing())
        if self.transport is not None:
            self.transport.close()  # flushes what is queued first...
            if self.transport.get_write_buffer_size():  # ...unless the client never reads
                grace = min(CLOSE_GRACE, self.server.config.limits.command_timeout)
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = asyncio.get_running_loop().call_later(grace, self.transport.abort)


def _commit(delivery: Delivery) -> DeliveryError | None:
    """Commit; the failure, if any, as a value (it may run in a worker thread)."""
    try:
        delivery.commit()
    except DeliveryError as exc:
        return exc
    return None


def _delivery_reply(error: DeliveryError) -> Reply:
    if error.disk_full:
        return r.INSUFFICIENT_STORAGE
    return r.LOCAL_ERROR if error.temporary else r.TRANSACTION_FAILED
