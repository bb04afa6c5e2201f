"""RFC 3461 DSN through a real smtpgate and the real aiosmtpd smarthost: the parameters
are accepted, kept in the queue record, passed upstream only when the smarthost offers
DSN, and honoured in our own reports (NOTIFY, RET, ENVID, ORCPT)."""

from __future__ import annotations

from typing import Any

import aiosmtplib

from tests.e2e.conftest import PASSWORD
from tests.relay.conftest import MESSAGE, RelayEnv, wait_for


async def submit(env: RelayEnv, mail: list[str], rcpts: dict[str, list[str]]) -> None:
    """One transaction with per-recipient RCPT parameters (sendmail shares one list)."""
    host, port = env.servers[-1][0].addresses[0]
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10) as client:
        await client.login("alice", PASSWORD)
        assert client.supports_extension("dsn")
        await client.mail("alice@local.test", options=mail)
        for address, options in rcpts.items():
            await client.rcpt(address, options=options)
        await client.data(MESSAGE)


def record(env: RelayEnv) -> dict[str, Any]:
    return env.record(env.queued()[0])


async def test_parameters_go_upstream_when_the_smarthost_offers_dsn(env: RelayEnv) -> None:
    env.smarthost.handler.dsn = True
    await env.start()
    await submit(env, ["RET=HDRS", "ENVID=env+2B42"],
                 {"you@remote.test": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;me+2Bx@remote.test"],
                  "other@remote.test": []})
    await wait_for(lambda: env.smarthost.handler.options)
    mail, rcpt = env.smarthost.handler.options[0]
    assert mail == ["RET=HDRS", "ENVID=ENV+2B42"]  # aiosmtpd upper-cases what it keeps
    assert rcpt == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=RFC822;ME+2BX@REMOTE.TEST"]
    assert sorted(env.smarthost.handler.accepted[0][1]) == ["other@remote.test", "you@remote.test"]


async def test_no_parameters_upstream_without_dsn(env: RelayEnv) -> None:
    await env.start()  # the smarthost does not offer DSN and would refuse them (555)
    await submit(env, ["RET=FULL", "ENVID=x"], {"you@remote.test": ["NOTIFY=FAILURE"]})
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert env.smarthost.handler.options == [([], [])]


async def test_notify_ret_full_envid_and_orcpt_in_the_bounce(env: RelayEnv) -> None:
    replies = env.smarthost.handler.rcpt_replies
    replies["quiet@remote.test"] = "550 5.1.1 no such user"
    replies["loud@remote.test"] = "550 5.1.1 no such user"
    await env.start()
    await submit(env, ["RET=FULL", "ENVID=env-42"],
                 {"quiet@remote.test": ["NOTIFY=NEVER"],
                  "loud@remote.test": ["NOTIFY=FAILURE", "ORCPT=rfc822;orig+40x@remote.test"]})
    await wait_for(lambda: env.mailbox("alice@local.test"))
    await wait_for(lambda: not env.queued())
    (dsn,) = env.mailbox("alice@local.test")
    assert b"Original-Envelope-Id: env-42" in dsn
    assert b"Original-Recipient: rfc822; orig@x@remote.test" in dsn
    assert b"Final-Recipient: rfc822; loud@remote.test" in dsn
    assert b"quiet@remote.test" not in dsn  # NOTIFY=NEVER: not reported
    returned = dsn.split(b"Content-Type: message/rfc822\r\n\r\n")[1]
    assert returned.startswith(b"Received: ") and b"\r\n\r\nhello\r\n" in returned


async def test_ret_hdrs_returns_only_the_header(env: RelayEnv) -> None:
    env.smarthost.handler.rcpt_replies["gone@remote.test"] = "550 5.1.1 no such user"
    await env.start()
    await submit(env, ["RET=HDRS"], {"gone@remote.test": []})
    await wait_for(lambda: env.mailbox("alice@local.test"))
    (dsn,) = env.mailbox("alice@local.test")
    returned = dsn.split(b"Content-Type: text/rfc822-headers\r\n\r\n")[1]
    assert b"Subject: relay" in returned and b"hello" not in returned
    assert b"message/rfc822" not in dsn


async def test_nothing_at_all_with_notify_never(env: RelayEnv) -> None:
    env.smarthost.handler.rcpt_replies["gone@remote.test"] = "550 5.1.1 no such user"
    await env.start()
    await submit(env, [], {"gone@remote.test": ["NOTIFY=NEVER"]})
    await wait_for(lambda: env.queue.exists() and not env.queued())
    await wait_for(lambda: env.smarthost.handler.connections >= 1)
    assert env.mailbox("alice@local.test") == []


async def test_delay_notice_only_where_notify_allows(env: RelayEnv) -> None:
    for address in ("plain@remote.test", "fail@remote.test", "delay@remote.test"):
        env.smarthost.handler.rcpt_replies[address] = "452 4.2.2 mailbox full"
    await env.start(env.make(relay={"delay_warning": "1s", "retry": "0.5s"}))
    await submit(env, [], {"plain@remote.test": [], "fail@remote.test": ["NOTIFY=FAILURE"],
                           "delay@remote.test": ["NOTIFY=DELAY"]})
    notify = {r["address"]: r["notify"] for r in record(env)["recipients"]}
    assert notify == {"plain@remote.test": "", "fail@remote.test": "FAILURE",
                      "delay@remote.test": "DELAY"}
    await wait_for(lambda: env.mailbox("alice@local.test"), timeout=10)
    await wait_for(lambda: record(env)["delay_warned"], timeout=10)
    (notice,) = env.mailbox("alice@local.test")
    assert b"Action: delayed" in notice
    assert b"Final-Recipient: rfc822; plain@remote.test" in notice
    assert b"Final-Recipient: rfc822; delay@remote.test" in notice
    assert b"fail@remote.test" not in notice


async def test_a_bad_dsn_value_is_501(env: RelayEnv) -> None:
    await env.start()
    host, port = env.servers[-1][0].addresses[0]
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10) as client:
        await client.login("alice", PASSWORD)
        await client.mail("alice@local.test")
        reply = await client.execute_command(b"RCPT", b"TO:<you@remote.test>", b"NOTIFY=OFTEN")
        assert (reply.code, reply.message[:5]) == (501, "5.5.4")
        reply = await client.execute_command(b"RCPT", b"TO:<you@remote.test>",
                                             b"ORCPT=rfc822;a+0Db")
        assert (reply.code, reply.message[:5]) == (501, "5.5.4")
