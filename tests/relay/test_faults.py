"""Faults on the way to the smarthost: per-recipient 4xx/5xx, refused connections, 421,
expired tokens, a token endpoint that is down, an untrusted certificate, expiry and bounces."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from smtpgate.config.schema import RelayConfig
from smtpgate.relay.upstream import tls_context
from tests.relay.conftest import RelayEnv, wait_for
from tests.relay.upstream import Smarthost, TokenServer, make_cert, server_tls


def _entry(env: RelayEnv) -> dict[str, Any]:
    return env.record(env.queued()[0])


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_per_recipient_results_retry_and_bounce(env: RelayEnv, pipelining: bool) -> None:
    env.smarthost.handler.pipelining = pipelining  # each reply must go to its own recipient
    replies = env.smarthost.handler.rcpt_replies
    replies["temp@remote.test"] = "451 4.2.1 try later"
    replies["gone@remote.test"] = "550 5.1.1 no such user"
    await env.start()
    await env.submit(["ok@remote.test", "temp@remote.test", "gone@remote.test"])
    accepted = env.smarthost.handler.accepted
    await wait_for(lambda: accepted)
    assert accepted[0][1] == ["ok@remote.test"]
    await wait_for(lambda: env.queued() and _entry(env)["attempts"] == 1)
    statuses = {r["address"]: r["status"] for r in _entry(env)["recipients"]}
    assert statuses == {"ok@remote.test": "delivered", "temp@remote.test": "pending",
                        "gone@remote.test": "failed"}
    del replies["temp@remote.test"]  # the retry ("1s") now succeeds
    await wait_for(lambda: len(accepted) == 2)
    assert accepted[1][1] == ["temp@remote.test"]  # never sent twice to the others
    await wait_for(lambda: not env.queued())
    (dsn,) = env.mailbox("alice@local.test")  # the sender is local: the DSN is in its Maildir
    assert b"report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; gone@remote.test" in dsn
    assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in dsn
    assert b"Remote-MTA: dns; 127.0.0.1" in dsn
    assert b"temp@remote.test" not in dsn.split(b"text/rfc822-headers")[0]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_data_refused_before_354_then_the_same_session_goes_on(
    env: RelayEnv, pipelining: bool
) -> None:
    """A DATA refused before its 354 leaves the transaction open upstream: the relay says
    RSET, so the next message of the same session is not a "nested MAIL" (503)."""
    port = env.smarthost.port
    env.smarthost.stop()  # until both are queued: then one session takes both in a row
    await env.start(env.make(relay={"max_connections": 1}))
    await env.submit(["first@remote.test"])
    await env.submit(["second@remote.test"])
    env.smarthost = Smarthost(env.tokens.state, port=port)
    handler = env.smarthost.handler
    handler.pipelining = pipelining
    handler.data_start_refusals = ["451 4.3.0 not now"]
    env.smarthost.start()
    await wait_for(lambda: len(handler.accepted) == 2, timeout=15)
    # the second went on in the same session at once; the first at its retry
    assert [a[1] for a in handler.accepted] == [["second@remote.test"], ["first@remote.test"]]
    await wait_for(lambda: not env.queued())
    assert not env.mailbox("alice@local.test")  # nothing bounced (it was "nested MAIL")


@pytest.mark.parametrize("smtputf8", [False, True], ids=["no-smtputf8", "smtputf8"])
async def test_a_non_ascii_address_needs_smtputf8_upstream(env: RelayEnv, smtputf8: bool
                                                         ) -> None:
    """RFC 6531: a non-ASCII address goes upstream as UTF-8 with SMTPUTF8 when it is
    offered; else that recipient fails at once (5.6.7, bounced), the others go."""
    handler = env.smarthost.handler
    handler.smtputf8 = smtputf8
    await env.start(env.make())
    await env.submit(["jörg@remote.test", "you@remote.test"])
    await wait_for(lambda: not env.queued())
    delivered = [a[1] for a in handler.accepted]
    if smtputf8:
        assert delivered == [["jörg@remote.test", "you@remote.test"]]
        assert "SMTPUTF8" in handler.options[0][0]
        assert not env.mailbox("alice@local.test")
    else:
        assert delivered == [["you@remote.test"]]
        (dsn,) = env.mailbox("alice@local.test")
        assert b"Status: 5.6.7" in dsn
        assert "Final-Recipient: utf-8; jörg@remote.test".encode() in dsn  # RFC 6533
        assert b"report-type=global-delivery-status" in dsn
        assert b"Content-Type: message/global-delivery-status" in dsn


async def test_upstream_refusing_connections_then_back(env: RelayEnv) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    await env.start()
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.queued() and _entry(env)["attempts"] >= 1)
    assert "connect" in str(_entry(env)["last_error"])
    env.smarthost = Smarthost(env.tokens.state, port=port).start()
    await wait_for(lambda: env.smarthost.handler.accepted, timeout=15)
    await wait_for(lambda: not env.queued())


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_421_mid_session_is_retried(env: RelayEnv, pipelining: bool) -> None:
    env.smarthost.handler.pipelining = pipelining
    replies = env.smarthost.handler.rcpt_replies
    replies["b@remote.test"] = "421 4.3.2 shutting down"
    await env.start()
    await env.submit(["a@remote.test", "b@remote.test"])
    await wait_for(lambda: env.queued() and _entry(env)["attempts"] >= 1)
    assert "421" in str(_entry(env)["last_error"])
    assert not env.smarthost.handler.accepted
    del replies["b@remote.test"]
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert env.smarthost.handler.accepted[0][1] == ["a@remote.test", "b@remote.test"]
    await wait_for(lambda: not env.queued())


async def test_expired_token_is_refreshed_once_and_rotated(env: RelayEnv) -> None:
    await env.start()
    await env.submit(["one@remote.test"])
    await wait_for(lambda: len(env.smarthost.handler.accepted) == 1)
    env.tokens.state.revoke_all()  # the cached token dies before its announced expiry
    await env.submit(["two@remote.test"])
    await wait_for(lambda: len(env.smarthost.handler.accepted) == 2)
    attempts = env.smarthost.handler.token_checks
    assert [ok for _, ok in attempts] == [True, False, True]
    assert len(env.tokens.state.requests) == 2
    assert env.config is not None
    assert (env.config.data_dir / "rt").read_text() == "rt-2\n"  # rotated, saved


async def test_token_endpoint_down_is_temporary(env: RelayEnv) -> None:
    port, state = env.tokens.port, env.tokens.state
    env.tokens.stop()
    await env.start()
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.queued() and _entry(env)["attempts"] >= 2)
    assert "token endpoint unreachable" in str(_entry(env)["last_error"])
    assert not env.mailbox("alice@local.test")  # no bounce
    env.tokens = TokenServer(state, port=port)
    await wait_for(lambda: env.smarthost.handler.accepted, timeout=15)
    await wait_for(lambda: not env.queued())


async def test_untrusted_certificate_is_refused(env: RelayEnv) -> None:
    env.smarthost.stop()
    cert, key = make_cert(env.tmp_path, "upstream")
    other, _ = make_cert(env.tmp_path, "other")
    env.smarthost = Smarthost(env.tokens.state, tls=server_tls(cert, key)).start()
    config = env.make(relay={"port": env.smarthost.port, "tls": "starttls",
                             "ca_file": str(other)})
    await env.start(config)
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.queued() and _entry(env)["attempts"] >= 1)
    assert "certificate not trusted" in str(_entry(env)["last_error"])
    assert not env.smarthost.handler.accepted
    assert env.smarthost.handler.token_checks == []  # no token sent to an unverified host
    await env.stop_smtpgate()
    await env.start(env.make(relay={"port": env.smarthost.port, "tls": "starttls",
                                    "ca_file": str(cert)}))
    await wait_for(lambda: env.smarthost.handler.accepted, timeout=15)


async def test_expiry_bounces_and_a_bounce_is_never_bounced(env: RelayEnv) -> None:
    env.smarthost.handler.rcpt_replies["you@remote.test"] = "451 4.2.1 try later"
    env.smarthost.handler.rcpt_replies["alice@remote.test"] = "451 4.2.1 try later"
    await env.start(env.make(relay={"max_queue_lifetime": "2s"}))
    await env.submit(["you@remote.test"])  # from a local sender: DSN into its Maildir
    await env.submit(["you@remote.test"], sender="alice@remote.test")  # DSN queued for relay
    await wait_for(lambda: env.mailbox("alice@local.test"), timeout=15)
    (dsn,) = env.mailbox("alice@local.test")
    assert b"Status: 4.2.1" in dsn and b"The delivery time expired: gave up after 2s" in dsn
    assert b"Diagnostic-Code: smtp; 451 4.2.1 try later" in dsn
    # The DSN to alice@remote.test is itself undeliverable; it expires and is not bounced.
    await wait_for(lambda: not env.queued(), timeout=20)
    assert len(env.mailbox("alice@local.test")) == 1


async def test_delay_warning_is_sent_once(env: RelayEnv) -> None:
    env.smarthost.handler.rcpt_replies["you@remote.test"] = "452 4.2.2 mailbox full"
    await env.start(env.make(relay={"delay_warning": "1s", "retry": "0.5s"}))
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.mailbox("alice@local.test"), timeout=10)
    await wait_for(lambda: _entry(env)["attempts"] >= 4, timeout=10)
    (notice,) = env.mailbox("alice@local.test")
    assert b"Action: delayed" in notice and b"Status: 4.2.2" in notice
    assert b"Subject: Delivery delayed" in notice
    assert len(env.queued()) == 1  # still queued


async def test_clean_stop_finishes_the_transaction_and_sends_nothing_twice(
    env: RelayEnv,
) -> None:
    handler = env.smarthost.handler
    handler.data_delay = 1.0
    await env.start()
    await env.submit(["you@remote.test"])
    await wait_for(lambda: handler.accepted)
    await env.stop_smtpgate()  # while the upstream has not answered DATA yet
    assert env.queued() == []
    handler.data_delay = 0.0
    await env.start()
    await asyncio.sleep(1.5)
    assert len(handler.accepted) == 1


async def test_implicit_tls_with_a_trusted_ca_file(env: RelayEnv) -> None:
    env.smarthost.stop()
    cert, key = make_cert(env.tmp_path, "upstream")
    env.smarthost = Smarthost(env.tokens.state, implicit=server_tls(cert, key)).start()
    await env.start(env.make(relay={"port": env.smarthost.port, "tls": "implicit",
                                    "ca_file": str(cert)}))
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.smarthost.handler.accepted)
    await wait_for(lambda: not env.queued())


async def test_a_failing_account_is_not_hammered(env: RelayEnv) -> None:
    await env.start(env.make(relay={"retry": "1h", "max_connections": 2}))
    assert env.config is not None
    (env.config.data_dir / "rt").write_text("revoked\n")
    for n in range(8):
        await env.submit([f"r{n}@remote.test"])

    def all_deferred() -> bool:
        names = env.queued()
        return len(names) == 8 and all(
            env.record(n)["attempts"] == 1 for n in names)

    await wait_for(all_deferred)
    assert len(env.tokens.state.requests) <= 2  # one per connection slot, not one per message
    errors = {env.record(n)["last_error"] for n in env.queued()}
    assert len(errors) == 1 and "invalid_grant" in errors.pop()


def test_the_tls_context_is_made_once_per_setting(tmp_path: Path) -> None:
    """Loading the CA store costs milliseconds: not once per upstream session."""
    cert, _ = make_cert(tmp_path, "upstream")
    relay = RelayConfig(host="127.0.0.1", port=1, tls="starttls", ca_file=str(cert))
    first = tls_context(relay)
    assert first is not None and tls_context(relay) is first
    assert tls_context(RelayConfig(host="127.0.0.1", port=1, tls="none")) is None
    unchecked = tls_context(RelayConfig(host="127.0.0.1", port=1, verify=False))
    assert unchecked is not None and unchecked.verify_mode == ssl.CERT_NONE
    stat = cert.stat()
    os.utime(cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # replaced
    assert tls_context(relay) is not first
