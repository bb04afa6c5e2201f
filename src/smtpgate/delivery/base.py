"""The delivery boundary (after maddy): nothing is durable before ``commit()``.

    delivery = target.start(envelope)
    delivery.write(chunk) ...          # the message as received (Received header first)
    delivery.commit()                  # returns only once the message is durable
    # or delivery.abort()              # leaves nothing behind

Where each call runs: a target whose ``blocking`` is True may wait on a disk or
the network in ``start`` and ``commit`` (Maildir creates directories and opens
its file in ``start``), so the server calls ``start`` together with the first
``write`` (the Received header), and later ``commit``, in a worker thread; the
body's ``write`` calls run on the event loop and must only buffer or append.
``abort`` may run on either. With ``blocking = False`` every call runs inline.
A target whose ``group_commit`` is True hands out ``GroupCommit`` deliveries:
the server then calls ``commit_soon`` on the event loop instead of ``commit``,
and answers when its callback reports the batch durable (``groupcommit``).
Calls on one delivery never overlap. A failure raises
``DeliveryError``; ``temporary`` selects 451 4.3.0 (retry later) or a
permanent 554/552 reply. ``check_recipient`` runs at each RCPT, on the event
loop and without I/O: a recipient that can never be delivered is refused
there, so the rest of the transaction still delivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from smtpgate.protocol.replies import Reply


class DeliveryError(Exception):
    def __init__(self, message: str, *, temporary: bool = True, disk_full: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.disk_full = disk_full  # 452 4.3.1 (insufficient system storage) rather than 451


@dataclass(frozen=True, slots=True)
class Envelope:
    session_id: str
    peer: str  # "ip:port" of the client
    helo: str  # the EHLO/HELO argument
    esmtp: bool  # EHLO rather than HELO
    tls: bool
    authenticated_user: str | None
    mail_from: str  # the reverse-path between < and >, "" for the null sender
    recipients: tuple[str, ...]
    auth_param: str | None = None  # MAIL FROM AUTH= decoded from xtext; "" for AUTH=<>
    body: str | None = None  # BODY= parameter, "7BIT" / "8BITMIME" / "BINARYMIME"
    smtputf8: bool = False
    received_at: float = 0.0  # seconds since the epoch, set by the host
    queue_id: str = ""  # letters and digits: the 250 reply, the Received id, every log line
    trusted_network: bool = False  # no AUTH: the client is in the listener's trusted_networks
    extra: dict[str, str] = field(default_factory=dict)
    # RFC 3461 DSN parameters: RET= ("FULL"/"HDRS"), ENVID= (decoded), and per recipient,
    # in the order of ``recipients``, NOTIFY= ("NEVER" or e.g. "FAILURE,DELAY") and
    # ORCPT= ("rfc822;addr", decoded); None where the client gave none.
    ret: str | None = None
    envid: str | None = None
    notify: tuple[str | None, ...] = ()
    orcpt: tuple[str | None, ...] = ()


class Delivery(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class GroupCommit(Delivery, Protocol):
    """A delivery that can join a group commit (``delivery/groupcommit.py``)."""

    def commit_soon(self, done: Callable[[DeliveryError | None], None]) -> None:
        """Commit in the next batch; ``done(error)`` runs in the committer thread."""
        ...


class InFlow(Protocol):
    """Flow control of a target that delivers onwards (the relay): Postfix's in_flow_delay.
    A target that has one offers it as its ``in_flow`` attribute (None: no control)."""

    def behind(self) -> bool:
        """Whether more messages wait to go on than the delivery can take soon."""
        ...

    def when_caught_up(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) once caught up, or after the delay."""
        ...


class DeliveryTarget(Protocol):
    blocking: bool  # start() and commit() may wait on disk or network: run them off the loop
    group_commit: bool  # its deliveries are ``GroupCommit``s: the server uses commit_soon

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        """None if ``address`` can be accepted; else the RCPT reply (e.g. 553 5.1.3)."""
        ...

    def start(self, envelope: Envelope) -> Delivery: ...
