"""The relay end to end: smtpgate accepts, queues durably and delivers to a real smarthost."""

from __future__ import annotations

from tests.relay.conftest import RelayEnv, wait_for


async def test_remote_and_local_recipients_are_split(env: RelayEnv) -> None:
    await env.start()
    reply = await env.submit(["you@remote.test", "bob@local.test"])
    assert reply.startswith("2.0.0")
    accepted = env.smarthost.handler.accepted
    await wait_for(lambda: accepted)
    sender, rcpts, data, user = accepted[0]
    assert (sender, rcpts, user) == ("alice@local.test", ["you@remote.test"], "device@remote.test")
    assert b"Subject: relay" in data and data.startswith(b"Received:")
    assert len(env.mailbox("bob@local.test")) == 1
    await wait_for(lambda: not env.queued())
    assert env.tokens.state.requests[0]["grant_type"] == "refresh_token"
