"""The relay's commands to the smarthost: PIPELINING (RFC 2920) when offered, and the DATA
payload (dot-stuffing, RFC 5321 section 4.5.2) on both paths, against a real aiosmtpd."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import uvloop
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from smtpgate.config.schema import RelayAccount, RelayConfig, RelayTls
from smtpgate.relay.upstream import Result, Upstream, _data_payload
from tests.relay.conftest import RelayEnv, wait_for
from tests.relay.upstream import Smarthost, make_cert, server_tls

DOTTED = (b"From: alice@local.test\r\nTo: you@remote.test\r\nSubject: dots\r\n\r\n"
          b".leading dot\r\n..two dots\r\n.\r\nmiddle\r\n. \r\nend\r\n")


def _grouped(reads: list[bytes]) -> list[bytes]:
    """The reads holding a whole transaction's commands: MAIL, RCPTs and DATA at once."""
    return [r for r in reads if r.startswith(b"MAIL FROM:") and r.endswith(b"DATA\r\n")]


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_message_arrives_unchanged_whatever_its_dots(
    env: RelayEnv, pipelining: bool
) -> None:
    handler = env.smarthost.handler
    handler.pipelining = pipelining
    await env.start()
    await env.submit(["you@remote.test", "two@remote.test"], message=DOTTED)
    await wait_for(lambda: handler.accepted)
    _, rcpts, data, _ = handler.accepted[0]
    assert rcpts == ["you@remote.test", "two@remote.test"]
    assert data.endswith(DOTTED)  # after our Received header; aiosmtpd undid the stuffing
    if pipelining:  # one write for MAIL, both RCPTs and DATA
        (group,) = _grouped(handler.reads)
        assert group.count(b"RCPT TO:") == 2
    else:
        assert not _grouped(handler.reads)


async def test_all_refused_then_the_same_session_goes_on(env: RelayEnv) -> None:
    port = env.smarthost.port
    env.smarthost.stop()  # until both are queued: then one session takes both in a row
    await env.start(env.make(relay={"max_connections": 1}))
    await env.submit(["gone@remote.test"])  # DATA then gets aiosmtpd's 503: RSET
    await env.submit(["you@remote.test"])
    env.smarthost = Smarthost(env.tokens.state, port=port)
    handler = env.smarthost.handler
    handler.pipelining = True
    handler.rcpt_replies["gone@remote.test"] = "550 5.1.1 no such user"
    env.smarthost.start()
    await wait_for(lambda: handler.accepted, timeout=15)
    assert [a[1] for a in handler.accepted] == [["you@remote.test"]]
    await wait_for(lambda: not env.queued())
    assert len(_grouped(handler.reads)) == 2
    assert handler.connections == 1  # one session: its replies stayed paired
    assert any(r.startswith(b"RSET") for r in handler.reads)
    (dsn,) = env.mailbox("alice@local.test")
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in dsn


def test_data_payload_matches_aiosmtplib() -> None:
    """Where it applies (every line ends in CRLF), the same bytes as aiosmtplib's DATA."""
    rng = random.Random(5321)
    pieces = [b".", b"..", b"a", b"\r\n", b"\r\n.", b".\r\n", b" ", b"\r", b"\n"]
    used = 0
    for _ in range(5000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        payload = _data_payload(message)
        if payload is None:
            crlf = message.count(b"\r\n")
            assert (message.count(b"\n"), message.count(b"\r")) != (crlf, crlf) or (
                not message.endswith(b"\r\n"))
            continue
        used += 1
        expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
        assert payload == expected
    assert used > 200  # the seeded draw gives 399


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_upstream_pipelines_on_either_event_loop(loop: str, tls: RelayTls, tmp_path: Path
                                                ) -> None:
    """uvloop's transports keep the bound data_received: pipelining must still get the
    replies (``relay.pipelining``), in clear and over TLS."""
    cert, key = make_cert(tmp_path, "upstream")
    context = server_tls(cert, key)
    smarthost = Smarthost(tls=context if tls == "starttls" else None,
                          implicit=context if tls == "implicit" else None).start()
    smarthost.handler.pipelining = True
    smarthost.handler.rcpt_replies["gone@remote.test"] = "550 5.1.1 no such user"
    relay = RelayConfig(host="127.0.0.1", port=smarthost.port, tls=tls, ca_file=str(cert))

    async def send_twice() -> list[dict[str, Result]]:
        upstream = Upstream(relay, RelayAccount(), "mx.test")
        await upstream.open()
        try:
            return [await upstream.send("a@local.test", ["you@remote.test", "gone@remote.test"],
                                        DOTTED) for _ in range(2)]
        finally:
            await upstream.close()

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            results = runner.run(asyncio.wait_for(send_twice(), 20))
    finally:
        smarthost.stop()
    for result in results:
        assert result["you@remote.test"].code == 250
        assert str(result["gone@remote.test"]) == "550 5.1.1 no such user"
    assert len(_grouped(smarthost.handler.reads)) == 2
    assert [a[2] for a in smarthost.handler.accepted] == [DOTTED, DOTTED]
