"""Counting accepted messages for the overview, around any delivery target."""

from __future__ import annotations

from collections.abc import Callable

from smtpgate.delivery.base import Delivery, DeliveryTarget, Envelope
from smtpgate.protocol.replies import Reply


class CountingTarget:
    """``target`` unchanged, but every committed message calls ``accepted``."""

    def __init__(self, target: DeliveryTarget, accepted: Callable[[], None]) -> None:
        self.target = target
        self.blocking = target.blocking
        self._accepted = accepted

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        return self.target.check_recipient(address, may_relay=may_relay)

    def start(self, envelope: Envelope) -> Delivery:
        return _Counted(self.target.start(envelope), self._accepted)


class _Counted:
    def __init__(self, delivery: Delivery, accepted: Callable[[], None]) -> None:
        self._delivery = delivery
        self._accepted = accepted

    def write(self, data: bytes) -> None:
        self._delivery.write(data)

    def commit(self) -> None:
        self._delivery.commit()  # raises DeliveryError: then nothing was accepted
        self._accepted()

    def abort(self) -> None:
        self._delivery.abort()
