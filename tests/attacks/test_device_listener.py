"""A device listener over real sockets: smuggling with bare_lf = "normalize", bare-LF
and 8-bit messages, AUTH after HELO, trusted networks; a normal listener next to it
keeps refusing all of that. Also the [submission] Date/Message-ID fix-ups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smtpgate.delivery.envelopes import read_envelopes
from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK, Raw, mailboxes, merge, messages, plain
from tests.attacks.test_smuggling import FAKE_ENDS, SMUGGLED
from tests.e2e.conftest import ServerFactory, free_port

TRUSTED = "127.0.0.2"


def device_config(**extra: Any) -> dict[str, Any]:
    return merge(PLAIN_OK, {"listener": [
        {"address": f"127.0.0.1:{free_port()}", "tls": "none", "profile": "device",
         "trusted_networks": [f"{TRUSTED}/32", "2001:db8::/32"]},
        {"address": f"127.0.0.1:{free_port()}", "tls": "none"},
    ]}, extra)


def device(server: Server) -> tuple[str, int]:
    return server.addresses[0]


def normal(server: Server) -> tuple[str, int]:
    return server.addresses[1]


async def logged_in(address: tuple[str, int]) -> Raw:
    c = await Raw.open(address)
    await c.ehlo()
    await c.login()
    return c


async def open_transaction(c: Raw, params: str = "") -> None:
    assert (await c.cmd(f"MAIL FROM:<alice@x.test>{params}")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await c.cmd("DATA")).code == 354


def only_message(server: Server) -> bytes:
    (msg,) = messages(server)
    return msg.read_bytes()


def body_of(message: bytes) -> bytes:
    """The message after our Received header (its lines are tab-folded)."""
    lines = message.split(b"\r\n")
    index = 1
    while lines[index].startswith(b"\t"):
        index += 1
    return b"\r\n".join(lines[index:])


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-split"])
async def test_smuggling_impossible_with_normalize(
    running: ServerFactory, fake_end: str, split: bool
) -> None:
    """Every variant of tests/attacks/test_smuggling.py: bare LF is stored as CRLF, bare
    CR still rejects, and only the one real <CRLF>.<CRLF> ends the message."""
    server = await running(**device_config())
    c = await logged_in(device(server))
    await open_transaction(c)
    payload = ("Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED).encode()
    if split:
        for i in range(0, len(payload), 3):
            await c.send(payload[i : i + 3])
            if i < 60:
                await asyncio.sleep(0.002)
    else:
        await c.send(payload)
    final = await c.reply()
    noop = await c.cmd("NOOP")
    assert (noop.code, noop.enh) == (250, "2.0.0"), noop
    assert await c.quiet(0.2) == b""  # no reply ever answers the smuggled commands
    assert "victim@x.test" not in mailboxes(server)
    if "\r" in fake_end.replace("\r\n", ""):  # a bare CR: still refused
        assert final.code == 550 and messages(server) == []
    else:
        assert final.code == 250, final
        stored = only_message(server)
        assert b"\r\nMAIL FROM:<ceo@bank.test>\r\n" in stored  # text of the one message
        assert b"\n" not in stored.replace(b"\r\n", b"")  # every LF is in a CRLF
    await c.close()


async def test_bare_lf_message_normalized_on_device_refused_elsewhere(
    running: ServerFactory,
) -> None:
    server = await running(**device_config())
    text = b"From: copier@x.test\nSubject: scan\n\nPage 1\nPage 2\r\n.\r\n"
    c = await logged_in(normal(server))
    await open_transaction(c)
    await c.send(text)
    resp = await c.reply()
    assert (resp.code, resp.enh) == (550, "5.5.2"), resp
    await c.close()
    c = await logged_in(device(server))
    await open_transaction(c)
    await c.send(text)
    assert (await c.reply()).code == 250
    assert body_of(only_message(server)).endswith(
        b"From: copier@x.test\r\nSubject: scan\r\n\r\nPage 1\r\nPage 2\r\n")
    await c.close()


async def test_eight_bit_accepted_on_device_refused_elsewhere(running: ServerFactory) -> None:
    server = await running(**device_config())
    text = "Subject: r\u00e9sum\u00e9\r\n\r\nna\u00efve\r\n".encode()
    c = await logged_in(normal(server))
    await open_transaction(c)
    resp = await c.cmd(text + b".")
    assert (resp.code, resp.enh) == (554, "5.6.0"), resp
    await open_transaction(c, " BODY=8BITMIME")
    assert (await c.cmd(text + b".")).code == 250  # declared: fine everywhere
    await c.close()
    c = await logged_in(device(server))
    await open_transaction(c)
    assert (await c.cmd(text + b".")).code == 250
    await c.close()
    assert len(messages(server)) == 2
    assert all(body_of(m.read_bytes()).endswith(text) for m in messages(server))


@pytest.mark.parametrize(("which", "expected"), [(device, 235), (normal, 503)])
async def test_auth_after_helo(running: ServerFactory, which: Any, expected: int) -> None:
    server = await running(**device_config())
    c = await Raw.open(which(server))
    assert (await c.cmd("HELO copier")).code == 250
    assert (await c.cmd(f"AUTH PLAIN {plain()}")).code == expected
    await c.close()


async def test_trusted_network_submits_without_auth(running: ServerFactory) -> None:
    server = await running(**device_config())
    c = await Raw.open(device(server), local=TRUSTED)
    await c.ehlo()
    await open_transaction(c)
    assert (await c.cmd("Subject: lan\r\n\r\nhi\r\n.")).code == 250
    await c.close()
    message = only_message(server)
    assert b" with ESMTP id " in message and b"ESMTPA" not in message
    assert message.startswith(b"Received: from client.test ([127.0.0.2])\r\n"
                              b"\t(trusted network)\r\n")
    (maildir,) = (server.config.data_dir / "mail").iterdir()
    (record,) = read_envelopes(maildir)
    assert record["trusted_network"] is True and record["authenticated_user"] is None


@pytest.mark.parametrize(("which", "local"), [(device, "127.0.0.1"), (normal, TRUSTED)])
async def test_everyone_else_still_needs_auth(
    running: ServerFactory, which: Any, local: str
) -> None:
    server = await running(**device_config())
    c = await Raw.open(which(server), local=local)
    await c.ehlo()
    resp = await c.cmd("MAIL FROM:<alice@x.test>")
    assert (resp.code, resp.enh) == (530, "5.7.0"), resp
    await c.close()


async def test_trusted_client_that_logs_in_is_recorded_as_authenticated(
    running: ServerFactory,
) -> None:
    server = await running(**device_config())
    c = await Raw.open(device(server), local=TRUSTED)
    await c.ehlo()
    await c.login()
    await open_transaction(c)
    assert (await c.cmd("Subject: a\r\n\r\nhi\r\n.")).code == 250
    await c.close()
    message = only_message(server)
    assert b" with ESMTPA id " in message and b"(trusted network)" not in message


# -- [submission] add_missing_headers ------------------------------------------------------


async def submit(server: Server, text: bytes, *, bdat: bool = False) -> bytes:
    c = await logged_in(normal(server))
    if bdat:
        assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
        assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
        await c.send(f"BDAT {len(text)} LAST\r\n".encode() + text)
        assert (await c.reply()).code == 250
    else:
        await open_transaction(c)
        assert (await c.cmd(text + b".")).code == 250
    await c.close()
    (msg,) = messages(server)
    data = msg.read_bytes()
    msg.unlink()
    return data


@pytest.mark.parametrize("bdat", [False, True], ids=["data", "bdat"])
async def test_missing_date_and_message_id_are_added_after_received(
    running: ServerFactory, bdat: bool
) -> None:
    server = await running(**device_config())
    text = b"From: copier@x.test\r\nSubject: scan\r\n\r\nbody\r\n"
    stored = await submit(server, text, bdat=bdat)
    after = body_of(stored)
    date, message_id, rest = after.split(b"\r\n", 2)
    assert date.startswith(b"Date: ") and rest == text
    queue_id = stored.split(b" id ", 1)[1].split(b"\r\n", 1)[0].split(b";")[0]
    assert message_id == b"Message-ID: <" + queue_id + b"@mx.test>"


async def test_present_fields_are_left_alone(running: ServerFactory) -> None:
    server = await running(**device_config())
    text = b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nmessage-id: <a@b>\r\n\r\nbody\r\n"
    assert body_of(await submit(server, text)) == text
    text = b"Message-ID: <c@d>\r\n\r\nDate: in the body\r\n"
    after = body_of(await submit(server, text))
    assert after.startswith(b"Date: ") and after.split(b"\r\n", 1)[1] == text


async def test_fix_ups_can_be_turned_off(running: ServerFactory) -> None:
    server = await running(**device_config(submission={"add_missing_headers": False}))
    text = b"Subject: as sent\r\n\r\nbody\r\n"
    assert body_of(await submit(server, text)) == text
