"""State shared by several instances of the server (``[state] url``): Redis.

Theory of operation
-------------------
Two interfaces already hide where limits live: ``ThrottleState``
(``policy/throttle.py``) for failed-login windows and ``Admission``
(``server/admission.py``) for connection counts. ``SharedState`` holds the
Redis implementation of each, both on one ``RedisLink``
(``state/link.py``), wrapped around the instance's own implementation, which
stays the fallback when Redis is away and ``on_failure = "open"``.
``ready`` answers the load balancer's readiness question.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from smtpgate.config.schema import Config
from smtpgate.policy.throttle import ThrottleState
from smtpgate.state.admission import Admission, RedisAdmission
from smtpgate.state.link import RedisLink
from smtpgate.state.throttle import RedisThrottleState


@dataclass(frozen=True, slots=True)
class SharedState:
    link: RedisLink
    throttle: RedisThrottleState
    admission: RedisAdmission

    def start(self) -> None:
        self.admission.start()

    def close(self) -> None:
        self.admission.close()
        self.link.close()


def open_shared_state(config: Config, throttle: ThrottleState, admission: Admission) -> SharedState:
    """The Redis state of ``[state] url`` around this instance's own ``throttle``/``admission``."""
    link = RedisLink(config.state.url, on_failure=config.state.on_failure)
    auth = config.auth
    closed_count = max(auth.ip_failure_limit, auth.user_failure_limit)
    return SharedState(
        link,
        RedisThrottleState(link, throttle, closed_count),
        RedisAdmission(link, admission, config.limits.max_connections_per_ip),
    )


async def ready(state: SharedState | None) -> dict[str, bool]:
    """``{"state": reachable}`` for /readyz: True without ``[state] url`` (nothing shared)."""
    if state is None:
        return {"state": True}
    return {"state": await asyncio.to_thread(state.link.ping)}
