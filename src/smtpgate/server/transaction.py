"""One message on its way to the delivery target: the host's side of the delivery contract.

Theory of operation
-------------------
``Deliveries`` is made once per server around a ``DeliveryTarget``
(``delivery/base.py``); the connection asks it for each MAIL FROM
(``check_sender``: ``server/senders.py``), for each RCPT
(``check_recipient``) and, at DATA or the first BDAT, for one ``Transaction``
per message. A transaction carries the envelope with its queue id and walks
the contract in order::

    reply = txn.begin()        # target.start() and the Received header
    txn.write(chunk) ...       # body chunks as they arrive: on the event loop
    reply = txn.end(rejection) # commit -> "250 2.0.0 Ok: queued as ID", or the error reply
    txn.abort()                # whenever the message will not be committed

``begin`` and ``end`` may wait on a disk or a network when the target says
so (``blocking``): the connection then runs them in a worker thread, else
inline (the discard target's fast path). A ``write`` failure is remembered
and answered at ``end``, so the client is told once, after its whole message
(RFC 5321 section 4.1.1.4). ``DeliveryError`` maps to a reply here and only
here (``delivery_reply``). The relay queue can replace this object: it only
has to offer the same four calls.

Each envelope gets a queue id (``server/ids.py``, letters and digits): the
same id is the Received header's ``id``, the 250 reply's, and in every log
line about the message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from smtpgate.credentials.base import Account
from smtpgate.delivery.base import (
    Delivery,
    DeliveryError,
    DeliveryTarget,
    Envelope,
    GroupCommit,
    InFlow,
)
from smtpgate.delivery.fixups import HeaderFixups
from smtpgate.delivery.received import message_date, received_header
from smtpgate.ops import metrics
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session
from smtpgate.protocol.states import State
from smtpgate.server.ids import new_queue_id
from smtpgate.server.senders import SenderPolicy

log = logging.getLogger("smtpgate.server")

def delivery_reply(error: DeliveryError) -> Reply:
    """The reply for a failed delivery: 452 4.3.1 disk full, 451 4.3.0 retry, 554 5.3.0."""
    if error.disk_full:
        return r.INSUFFICIENT_STORAGE
    return r.LOCAL_ERROR if error.temporary else r.TRANSACTION_FAILED


def build_envelope(
    session: Session, *, session_id: str, peer: str, tls: bool, trusted_network: bool = False
) -> Envelope:
    """The envelope of the session's mail transaction, with a fresh queue id.

    The one place that reads the transaction from the session. ``trusted_network``:
    submitted without AUTH from the listener's ``trusted_networks``.
    """
    mail = session.transaction
    params = mail.params
    body = params.get("BODY")
    return Envelope(
        session_id=session_id,
        peer=peer,
        helo=session.helo,
        esmtp=session.esmtp,
        tls=tls,
        authenticated_user=session.user,
        mail_from=mail.sender or "",
        recipients=tuple(mail.recipients),
        auth_param=params.get("AUTH"),
        body=body.upper() if body else None,
        smtputf8="SMTPUTF8" in params,
        received_at=time.time(),
        queue_id=new_queue_id(),
        trusted_network=trusted_network,
        ret=params.get("RET"),
        envid=params.get("ENVID"),
        notify=tuple(p.get("NOTIFY") for p in mail.rcpt_params),
        orcpt=tuple(p.get("ORCPT") for p in mail.rcpt_params),
    )


def message_open(session: Session) -> bool:
    """Whether the session is inside a message: DATA, between BDAT chunks, or awaiting
    our answer. When it is not, a RSET or a refused chunk has ended the message."""
    return session.in_data or session.awaiting_reply or session.state is State.BDAT


@dataclass(frozen=True, slots=True)
class Deliveries:
    """The delivery target and what the Received header needs from the configuration."""

    target: DeliveryTarget
    hostname: str
    show_user_in_received: bool
    senders: SenderPolicy = field(default_factory=lambda: SenderPolicy(enforce_sender=False))
    add_missing_headers: bool = False  # [submission]: Date and Message-ID (delivery/fixups.py)
    on_accepted: Callable[[], None] | None = None  # each committed message (the admin page)

    def check_sender(self, account: Account | None, user: str, sender: str) -> Reply | None:
        """MAIL FROM of an authenticated account: sender list and daily quota
        (``server/senders.py``); may block when ``sender_check_blocks``."""
        return self.senders.check(account, user, sender)

    def sender_check_blocks(self, account: Account | None) -> bool:
        return self.senders.needs_thread(account)

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        return self.target.check_recipient(address, may_relay=may_relay)

    @property
    def in_flow(self) -> InFlow | None:
        """The target's flow control, if it has one (``delivery/base.py``)."""
        flow: InFlow | None = getattr(self.target, "in_flow", None)
        return flow

    def transaction(self, envelope: Envelope) -> Transaction:
        return Transaction(self, envelope)


class Transaction:
    """One message: begin, write..., end (or abort). See the module docstring."""

    def __init__(self, deliveries: Deliveries, envelope: Envelope) -> None:
        self.envelope = envelope
        self.queue_id = envelope.queue_id
        self.blocking = deliveries.target.blocking
        self.group_commit = deliveries.target.group_commit
        self._tag = f"session={envelope.session_id} queue={envelope.queue_id}"  # for log lines
        self._deliveries = deliveries
        self._delivery: Delivery | None = None
        self._failure: DeliveryError | None = None
        self.size = 0  # body bytes received, for the metrics
        self._aborted = False  # abort() may come from the loop while begin() runs in a thread
        self._lock = threading.Lock()
        self._fixups = (
            HeaderFixups(
                date=message_date(envelope.received_at),
                message_id=f"<{envelope.queue_id}@{deliveries.hostname}>",
            )
            if deliveries.add_missing_headers else None
        )

    def begin(self) -> Reply | None:
        """Start the delivery and write the Received header; None, or the refusal."""
        d = self._deliveries
        header = received_header(
            self.envelope, hostname=d.hostname, show_user=d.show_user_in_received,
            message_id=self.queue_id,
        )
        delivery: Delivery | None = None
        try:
            delivery = d.target.start(self.envelope)
            delivery.write(header)
        except BaseException as exc:
            if delivery is not None:
                _abort(delivery, self._tag)
            if not isinstance(exc, DeliveryError):
                raise
            return self._failed(exc)
        with self._lock:
            if not self._aborted:
                self._delivery = delivery
                return None
        _abort(delivery, self._tag)  # the client left while we were starting
        return r.LOCAL_ERROR

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._delivery is None or self._failure is not None:
            return
        if self._fixups is not None:
            data = self._fixups.feed(data)
            if not data:
                return
        try:
            self._delivery.write(data)
        except DeliveryError as exc:
            self._failure = exc

    def end(self, rejection: Reply | None) -> Reply:
        """Commit unless the session already refused the message; the reply to send. This
        waits for the commit: with ``blocking``, call it in a worker thread."""
        started = time.perf_counter()
        step = self._before_commit(rejection)
        if isinstance(step, Reply):
            return self._answered(step, started)
        return self._answered(self._after_commit(_commit(step)), started)

    def end_in_group(self, answer: Callable[[Reply], None]) -> None:
        """Commit in the next group commit (``group_commit`` targets); ``answer(reply)``
        then runs in the committer thread, or at once if there is nothing to commit."""
        started = time.perf_counter()
        step = self._before_commit(None)
        if isinstance(step, Reply):
            answer(self._answered(step, started))
            return
        delivery = cast(GroupCommit, step)  # the target said so: ``group_commit``

        def done(error: DeliveryError | None) -> None:
            answer(self._answered(self._after_commit(error), started))

        try:
            delivery.commit_soon(done)
        except DeliveryError as exc:
            done(exc)

    def _answered(self, reply: Reply, started: float) -> Reply:
        metrics.get().message(reply.code, self.size, time.perf_counter() - started)
        return reply

    def _before_commit(self, rejection: Reply | None) -> Reply | Delivery:
        """The reply if the message ends here, else the delivery to commit."""
        if rejection is not None:
            self.abort()
            log.info("%s message rejected: %d", self._tag, rejection.code)
            return rejection
        if self._fixups is not None and self._delivery is not None:
            tail, self._fixups = self._fixups.finish(), None
            if tail:
                self.write(tail)
        if self._failure is not None or self._delivery is None:
            self.abort()
            return self._failed(self._failure or DeliveryError("no delivery started"))
        delivery, self._delivery = self._delivery, None
        return delivery

    def _after_commit(self, error: DeliveryError | None) -> Reply:
        """The reply to a commit (a failed one has cleaned up after itself)."""
        if error is not None:
            return self._failed(error)
        e = self.envelope
        log.info("%s message accepted from=<%s> rcpts=%d", self._tag, e.mail_from,
                 len(e.recipients))
        if self._deliveries.on_accepted is not None:
            self._deliveries.on_accepted()
        return r.MESSAGE_ACCEPTED.with_text(f"Ok: queued as {self.queue_id}")

    def _failed(self, error: DeliveryError) -> Reply:
        log.warning("%s delivery failed: %s", self._tag, error)
        return delivery_reply(error)

    def abort(self) -> None:
        """Throw the message away; safe to call at any point, any number of times."""
        with self._lock:
            self._aborted = True
            delivery, self._delivery = self._delivery, None
        if delivery is not None:
            _abort(delivery, self._tag)


def _abort(delivery: Delivery, tag: str) -> None:
    try:
        delivery.abort()
    except DeliveryError:
        log.warning("%s could not clean up an aborted delivery", tag)


def _commit(delivery: Delivery) -> DeliveryError | None:
    """Commit; the failure, if any, as a value (it may run in a worker thread)."""
    try:
        delivery.commit()
    except DeliveryError as exc:
        return exc
    return None
