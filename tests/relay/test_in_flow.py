"""``[relay] in_flow_delay`` (Postfix's name): while the deliverer is behind, a 250 waits for
it to catch up, up to the delay, so acceptance slows to the rate of delivery."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtpgate.relay.flow import FLOW_BACKLOG
from tests.relay.conftest import RelayEnv, wait_for

MESSAGES = FLOW_BACKLOG + 4  # one upstream connection: the last few find it behind


async def submit_all(env: RelayEnv) -> list[float]:
    """Submit every message at once, each on its own connection; how long each took."""

    async def one(n: int) -> float:
        started = time.monotonic()
        reply = await env.submit([f"r{n}@remote.test"])
        assert "queued as" in reply, reply
        return time.monotonic() - started

    return list(await asyncio.gather(*(one(n) for n in range(MESSAGES))))


@pytest.mark.parametrize("delay", ["2s", ""])
async def test_a_relay_behind_holds_250s_up_to_in_flow_delay(env: RelayEnv, delay: str) -> None:
    config = env.make(relay={"max_connections": 1, "in_flow_delay": delay})
    env.smarthost.handler.data_delay = 1.0  # one message a second: the queue grows
    await env.start(config)
    took = await submit_all(env)
    if delay:
        held = [t for t in took if t >= 1.9]
        assert held and max(took) < 10, took  # held up to the delay, never longer
        assert len(held) < MESSAGES, took  # the first ones went through at once
    else:
        assert max(took) < 1.5, took  # nothing holds them
    await wait_for(lambda: len(env.smarthost.handler.accepted) == MESSAGES, timeout=30)
    await wait_for(lambda: env.queued() == [])
