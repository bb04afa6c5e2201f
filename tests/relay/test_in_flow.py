"""``[relay] in_flow_delay`` (Postfix's name): while the deliverer is behind, a 250 waits for
it to catch up, up to the delay, so acceptance slows to the rate of delivery."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtpgate.relay.flow import FLOW_BACKLOG, InFlowGate
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


async def test_each_held_250_waits_its_own_delay_then_goes() -> None:
    """One timer serves every held reply: each still goes ``delay`` after it was held,
    in order, unless the backlog clears first."""
    backlog = [100]  # behind until the test says otherwise
    gate = InFlowGate(lambda: backlog[0], connections=1, delay=0.3)
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    held: dict[str, float] = {}

    def hold(name: str) -> None:
        held[name] = loop.time()

        def send() -> None:
            sent[name] = loop.time()

        gate.when_caught_up(send)

    hold("a")
    await asyncio.sleep(0.1)
    hold("b")
    hold("c")
    await asyncio.sleep(0.25)  # a's delay has passed, not b's
    assert list(sent) == ["a"]
    assert sent["a"] - held["a"] >= 0.29
    await asyncio.sleep(0.1)
    assert list(sent) == ["a", "b", "c"]
    assert all(sent[n] - held[n] >= 0.29 for n in "bc")
    hold("d")
    gate.progressed()  # still behind: d waits
    assert "d" not in sent
    backlog[0] = 0
    gate.progressed()  # caught up: d goes at once, its timer is gone
    assert "d" in sent and sent["d"] - held["d"] < 0.1
    await asyncio.sleep(0.35)
    assert list(sent) == ["a", "b", "c", "d"]
