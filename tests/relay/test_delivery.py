"""The relay end to end: smtpgate accepts, queues durably and delivers to a real smarthost."""

from __future__ import annotations

import aiosmtplib
import pytest

from smtpgate.ops import metrics
from tests.relay.conftest import MESSAGE, RelayEnv, wait_for


def _delivered() -> float:
    return float(metrics.get().delivery_results["delivered"]._value.get())


async def test_remote_and_local_recipients_are_split(env: RelayEnv) -> None:
    env.smarthost.stop()  # keep it queued long enough to see the file
    await env.start()
    reply = await env.submit(["you@remote.test", "bob@local.test"])
    assert reply.startswith("2.0.0 Ok: queued as ")
    queue_id = reply.rsplit(" ", 1)[1]
    await wait_for(env.queued)
    assert env.queued() == [f"{queue_id}.msg"]  # the reply names the queue file
    assert len(env.mailbox("bob@local.test")) == 1


async def test_delivered_with_xoauth2(env: RelayEnv) -> None:
    delivered_before = _delivered()
    await env.start()
    await env.submit(["you@remote.test", "bob@local.test"])
    accepted = env.smarthost.handler.accepted
    await wait_for(lambda: accepted)
    sender, rcpts, data, user = accepted[0]
    assert (sender, rcpts, user) == ("alice@local.test", ["you@remote.test"], "device@remote.test")
    assert b"Subject: relay" in data and data.startswith(b"Received:")
    assert len(env.mailbox("bob@local.test")) == 1
    await wait_for(lambda: not env.queued())
    assert env.tokens.state.requests[0]["grant_type"] == "refresh_token"
    assert _delivered() == delivered_before + 1  # the relay feeds the metrics


async def test_never_an_open_relay(env: RelayEnv) -> None:
    server = await env.start()
    host, port = server.addresses[0]
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10) as client:
        await client.mail("stranger@elsewhere.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
            await client.rcpt("you@remote.test")
        assert (info.value.code, info.value.message) == (554, "5.7.1 Relay access denied")
        assert (await client.rcpt("bob@local.test")).code == 250  # local mail is welcome
        assert (await client.data(MESSAGE)).code == 250
    assert env.queued() == []
    assert len(env.mailbox("bob@local.test")) == 1
