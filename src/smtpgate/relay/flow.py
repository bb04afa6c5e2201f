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
from collections import deque
from collections.abc import Callable

FLOW_BACKLOG = 8  # messages per upstream connection waiting or in flight before 250s wait


class InFlowGate:
    """The ``InFlow`` of a deliverer (``delivery/base.py``); ``backlog`` counts its
    messages ready or in flight."""

    def __init__(self, backlog: Callable[[], int], connections: int, delay: float) -> None:
        self._backlog = backlog
        self._limit = FLOW_BACKLOG * connections
        self._delay = delay
        # Held replies with their deadlines, oldest first (one delay for all: in order).
        # One timer, for the oldest: a timer per held reply cost more than holding it.
        self._waiting: deque[tuple[float, Callable[[], None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def behind(self) -> bool:
        return self._backlog() > self._limit

    def when_caught_up(self, callback: Callable[[], None]) -> None:
        """``callback`` (a held 250) runs once the backlog is down again, or after the
        delay at the latest."""
        loop = asyncio.get_running_loop()
        self._waiting.append((loop.time() + self._delay, callback))
        if self._timer is None:
            self._timer = loop.call_at(self._waiting[0][0], self._expire)

    def progressed(self) -> None:
        """A message left the backlog (the deliverer calls this): release the held
        replies if it is short enough now."""
        if self._waiting and not self.behind():
            self.release_all()

    def release_all(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, callback in waiting:
            callback()

    def _expire(self) -> None:
        """The oldest held replies have waited the whole delay: send them."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiting and self._waiting[0][0] <= now:
            self._waiting.popleft()[1]()
        if self._waiting:
            self._timer = loop.call_at(self._waiting[0][0], self._expire)
