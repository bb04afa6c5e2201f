"""The discard target: accept every message and drop it (Postfix's ``discard``).

For testing, benchmarks and sinks. ``commit`` succeeds without storing
anything; ``bytes_written`` counts what was thrown away.
"""

from __future__ import annotations

from smtpgate.delivery.base import DeliveryError, Envelope
from smtpgate.protocol.replies import Reply


class DiscardDelivery:
    def __init__(self) -> None:
        self.bytes_written = 0
        self.done = False

    def write(self, data: bytes) -> None:
        if self.done:
            raise DeliveryError("delivery already finished")
        self.bytes_written += len(data)

    def commit(self) -> None:
        if self.done:
            raise DeliveryError("delivery already finished")
        self.done = True

    def abort(self) -> None:
        self.done = True


class DiscardTarget:
    """A ``DeliveryTarget`` that drops every message."""

    blocking = False  # nothing touches a disk: the server calls it inline
    group_commit = False

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        return None

    def start(self, envelope: Envelope) -> DiscardDelivery:
        return DiscardDelivery()
