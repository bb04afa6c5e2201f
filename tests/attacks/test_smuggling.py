"""SMTP smuggling over real sockets (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766,
CVE-2024-27305; RFC 5321 sections 2.3.8 and 4.1.1.4).

Each case sends one message whose body holds a fake end-of-data made of bare
LF/CR, followed by a complete smuggled transaction. Whatever the server does
with the first message, the smuggled one must never be stored and no reply
may answer it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.attacks.raw import PLAIN_OK, Raw, authed, mailboxes, messages
from tests.e2e.conftest import ServerFactory

SMUGGLED = (
    "MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@x.test>\r\nDATA\r\n"
    "From: ceo@bank.test\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
)
# CVE-2023-51764 (Postfix), -51765 (Sendmail), -51766 (Exim), CVE-2024-27305 (aiosmtpd)
FAKE_ENDS = {
    "lf-dot-lf": "\n.\n",
    "crlf-dot-lf": "\r\n.\n",
    "lf-dot-crlf": "\n.\r\n",
    "cr-dot-cr": "\r.\r",
    "crlf-dot-cr": "\r\n.\r",
    "cr-dot-crlf": "\r.\r\n",
    "crlf-dot-cr-lf-split": "\r\n.\r\r\n",
    "nul-dot": "\r\n\x00.\r\n",
}


async def _open_transaction(c: Raw) -> None:
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await c.cmd("DATA")).code == 354


async def _assert_one_reply_then_idle(c: Raw) -> int:
    """Exactly one reply ends the message; a NOOP then gets its own 250."""
    final = await c.reply()
    assert final.code in (250, 550), final
    noop = await c.cmd("NOOP")
    assert (noop.code, noop.enh) == (250, "2.0.0"), noop
    assert await c.quiet(0.2) == b""
    return final.code


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-split"])
async def test_bare_line_ending_never_ends_data(
    running: ServerFactory, fake_end: str, split: bool
) -> None:
    server = await running(**PLAIN_OK)
    c = await authed(server)
    await _open_transaction(c)
    # SMUGGLED ends in the one real <CRLF>.<CRLF>: it closes the outer message.
    payload = ("Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED).encode()
    if split:  # the fake end spread over TCP segments and framer feeds
        for i in range(0, len(payload), 3):
            await c.send(payload[i : i + 3])
            if i < 60:
                await asyncio.sleep(0.002)
    else:
        await c.send(payload)
    code = await _assert_one_reply_then_idle(c)
    assert "victim@x.test" not in mailboxes(server)
    stored = messages(server)
    if "\x00" not in fake_end:
        # RFC 5321 section 2.3.8: bare CR/LF in DATA rejects the whole message.
        assert code == 550 and stored == []
    else:
        assert code == 250 and len(stored) == 1
        assert b"\r\nMAIL FROM:<ceo@bank.test>\r\n" in stored[0].read_bytes()
    await c.close()


async def test_only_crlf_dot_crlf_ends_data(running: ServerFactory) -> None:
    """RFC 5321 section 4.1.1.4: the real end stores exactly one message; what follows
    it in the same packet is read as commands of the next transaction."""
    server = await running(**PLAIN_OK)
    c = await authed(server)
    await _open_transaction(c)
    await c.send("Subject: hi\r\n\r\n..leading dot\r\n.\r\nRSET\r\n")
    assert (await c.reply()).code == 250
    assert (await c.reply()).code == 250  # RSET
    (msg,) = messages(server)
    assert msg.read_bytes().endswith(b"\r\n.leading dot\r\n")
    await c.close()


async def test_bdat_with_embedded_dots_and_commands(running: ServerFactory) -> None:
    """RFC 3030 section 2: BDAT chunks are counted octets; dots and CRLF.CRLF inside
    are data, never an end of message, never commands."""
    server = await running(**PLAIN_OK)
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    chunk1 = ("Subject: bdat\r\n\r\n.\r\n" + SMUGGLED + "\n.\n").encode()
    chunk2 = b"..two dots\r\n.\r\nQUIT\r\n"
    await c.send(f"BDAT {len(chunk1)}\r\n".encode() + chunk1)
    assert (await c.reply()).code == 250
    await c.send(f"BDAT {len(chunk2)} LAST\r\n".encode() + chunk2)
    resp = await c.reply()
    assert (resp.code, resp.enh) == (250, "2.0.0"), resp
    assert (await c.cmd("NOOP")).code == 250  # the QUIT inside was data
    (msg,) = messages(server)
    body = msg.read_bytes()
    assert body.endswith(chunk1 + chunk2)  # stored verbatim: no unstuffing in BDAT
    assert mailboxes(server) == ["bob@x.test"]
    await c.close()


async def test_refused_bdat_chunk_is_skipped_not_executed(running: ServerFactory) -> None:
    """A BDAT refused with 530/503 still carries its octets: they are read and dropped,
    never parsed as commands (the fix noted in Session.reject)."""
    server = await running(**PLAIN_OK)
    c = await Raw.open(server.addresses[2])
    await c.ehlo()
    inner = b"NOOP\r\nNOOP\r\nAUTH PLAIN =\r\n"
    await c.send(f"BDAT {len(inner)} LAST\r\n".encode() + inner)
    resp = await c.reply()
    assert (resp.code, resp.enh) == (530, "5.7.0"), resp
    assert (await c.cmd("NOOP")).code == 250
    assert await c.quiet(0.2) == b""
    await c.close()


async def test_bdat_rejected_at_delivery_start_skips_its_octets(
    running: ServerFactory, tmp_path: object
) -> None:
    """Session.reject for a first BDAT chunk: the chunk's octets are skipped."""
    server = await running(**PLAIN_OK)
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    # A file where bob's Maildir must go: the Maildir target fails at start (451).
    blocker = server.config.data_dir / "mail" / "bob@x.test"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    inner = b"NOOP\r\nNOOP\r\n"
    await c.send(f"BDAT {len(inner)} LAST\r\n".encode() + inner)
    resp = await c.reply()
    assert (resp.code, resp.enh) == (451, "4.3.0"), resp
    assert (await c.cmd("RSET")).code == 250
    assert await c.quiet(0.2) == b""
    assert messages(server) == []
    await c.close()


async def test_bdat_size_in_unicode_digits_never_drops_the_session(
    running: ServerFactory,
) -> None:
    """str.isdigit() accepts "\u00b2", int() does not: the chunk size is ASCII digits
    only (RFC 3030 section 3), a refusal in every state, and the session lives on."""
    server = await running(**PLAIN_OK)
    c = await Raw.open(server.addresses[2])
    resp = await c.cmd("BDAT \u00b2")  # before EHLO, no login
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    await c.ehlo()
    resp = await c.cmd("BDAT \u00b2 LAST")  # no login
    assert (resp.code, resp.enh) == (530, "5.7.0"), resp
    await c.close()
    c = await authed(server)
    await _open_transaction_for_bdat(c)
    for size in ("\u00b2", "\uff11\uff12", "\u0663"):
        resp = await c.cmd(f"BDAT {size} LAST")
        assert (resp.code, resp.enh) == (501, "5.5.4"), (size, resp)
    await c.send(b"BDAT 2 LAST\r\nok")
    assert (await c.reply()).code == 250
    assert len(messages(server)) == 1
    await c.close()


async def _open_transaction_for_bdat(c: Raw) -> None:
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
