"""Upstream AUTH variants and account choice: PLAIN and LOGIN with a password file,
OAUTHBEARER (RFC 7628), client credentials, per-sender accounts, connection reuse."""

from __future__ import annotations

import pytest

from smtpgate.config.schema import RelayAccount
from smtpgate.relay.accounts import choose
from tests.relay.conftest import RelayEnv, wait_for, xoauth2_account
from tests.relay.upstream import CLIENT_SECRET, UPSTREAM_PASSWORD, UPSTREAM_USER


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_password_auth(env: RelayEnv, mechanism: str) -> None:
    config = env.make(relay={"account": [{"auth": mechanism, "username": UPSTREAM_USER,
                                          "password_file": "upstream.pw"}]})
    (config.data_dir / "upstream.pw").write_text(UPSTREAM_PASSWORD + "\n")
    await env.start(config)
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert env.smarthost.handler.accepted[0][3] == UPSTREAM_USER
    assert env.tokens.state.requests == []


async def test_wrong_password_is_temporary(env: RelayEnv) -> None:
    config = env.make(relay={"account": [{"auth": "plain", "username": UPSTREAM_USER,
                                          "password_file": "upstream.pw"}]})
    (config.data_dir / "upstream.pw").write_text("wrong\n")
    await env.start(config)
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.queued() and b'"attempts": 1' in
                   env.record_bytes(env.queued()[0]))
    record = env.record_bytes(env.queued()[0]).decode()
    assert "auth: AUTH PLAIN refused (upstream said: 535" in record
    for path in env.queue.rglob("*"):  # the secret is never written anywhere
        assert path.is_dir() or b"wrong" not in path.read_bytes(), path


async def test_oauthbearer_with_client_credentials(env: RelayEnv) -> None:
    config = env.make(relay={"account": [xoauth2_account(
        env.tokens, auth="oauthbearer", oauth2_flow="client_credentials",
        client_secret_file="secret", refresh_token_file="",
        scope="https://outlook.office365.com/.default")]})
    (config.data_dir / "secret").write_text(CLIENT_SECRET + "\n")
    await env.start(config)
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert env.smarthost.handler.accepted[0][3] == "device@remote.test"
    (request,) = env.tokens.state.requests
    assert request["grant_type"] == "client_credentials"
    assert request["scope"] == "https://outlook.office365.com/.default"
    cache = list((config.data_dir / "relay" / "tokens").glob("*.json"))
    assert len(cache) == 1 and (cache[0].stat().st_mode & 0o777) == 0o600


async def test_several_messages_share_one_connection(env: RelayEnv) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    await env.start(env.make(relay={"max_connections": 1}))
    for n in range(4):
        await env.submit([f"r{n}@remote.test"])
    await env.stop_smtpgate()
    from tests.relay.upstream import Smarthost

    env.smarthost = Smarthost(env.tokens.state, port=port).start()
    await env.start()
    await wait_for(lambda: len(env.smarthost.handler.accepted) == 4)
    assert env.smarthost.handler.connections == 1
    assert len(env.tokens.state.requests) == 1  # the token is cached, not fetched per message


def test_account_choice() -> None:
    exact = RelayAccount(senders=("boss@example.org",), username="boss")
    domain = RelayAccount(senders=("*@example.org",), username="dept")
    anyone = RelayAccount(senders=("*",), username="default")
    accounts = (exact, domain, anyone)
    assert choose(accounts, "Boss@Example.org") is exact
    assert choose(accounts, "other@EXAMPLE.org") is domain
    assert choose(accounts, "x@elsewhere.test") is anyone
    assert choose(accounts, "") is anyone  # bounces use the "*" account
    assert choose((exact, domain), "x@elsewhere.test") is None
    assert choose((exact, domain), "") is exact
