"""Flow control of the relay: Postfix's ``in_flow_delay`` (``[relay] in_flow_delay``).

Accepting a message costs less than relaying it, so under a sustained load
the queue would grow as fast as clients can send. While the deliverer is
behind (more than ``FLOW_BACKLOG`` messages per upstream connection ready or
in flight), the server holds each new message's ``250`` -- the message is
already queued and safe -- until the backlog is down again, or for
``in_flow_delay`` at the most (``server/connection.py`` asks ``behind`` and
hands the reply to ``when_caught_up``). The client then sends its next
message a little later: acceptance slows to the rate of delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FLOW_BACKLOG = 8  # messages per upstream connection waiting or in flight before 250s wait


class InFlowGate:
    """The ``InFlow`` of a deliverer (``delivery/base.py``); ``backlog`` counts its
    messages ready or in flight."""

    def __init__(self, backlog: Callable[[], int], connections: int, delay: float) -> None:
        self._backlog = backlog
        self._limit = FLOW_BACKLOG * connections
        self._delay = delay
        self._waiting: list[_Once] = []  # held replies

    def behind(self) -> bool:
        return self._backlog() > self._limit

    def when_caught_up(self, callback: Callable[[], None]) -> None:
        """``callback`` (a held 250) runs once the backlog is down again, or after the
        delay at the latest."""
        once = _Once(callback)
        self._waiting.append(once)
        asyncio.get_running_loop().call_later(self._delay, once)

    def progressed(self) -> None:
        """A message left the backlog (the deliverer calls this): release the held
        replies if it is short enough now."""
        if self._waiting and not self.behind():
            self.release_all()

    def release_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        for once in waiting:
            once()


class _Once:
    """A callback that runs at most once, whichever of its two triggers comes first."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def __call__(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
