"""The delivery boundary (after maddy): nothing is durable before ``commit()``.

    delivery = target.start(envelope)
    delivery.write(chunk) ...          # the message as received (Received header first)
    delivery.commit()                  # returns only once the message is durable
    # or delivery.abort()              # leaves nothing behind

``write`` and ``commit`` may block on the disk; the server calls them from a
worker thread. A failure raises ``DeliveryError``; ``temporary`` selects 451
4.3.0 (retry later) or a permanent 554/552 reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    extra: dict[str, str] = field(default_factory=dict)


class Delivery(Protocol):
    # A delivery may set ``blocking = False`` when commit() never waits on a disk
    # or network; the server then calls it inline instead of in a worker thread.

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class DeliveryTarget(Protocol):
    def start(self, envelope: Envelope) -> Delivery: ...
