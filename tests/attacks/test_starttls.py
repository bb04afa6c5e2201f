"""STARTTLS attacks over real sockets (RFC 3207, CVE-2011-0411, aiosmtpd CVE-2024-34083)."""

from __future__ import annotations

import asyncio
import ssl
import time

from tests.attacks.raw import PLAIN_OK, Raw, addr, merge, plain
from tests.e2e.conftest import ServerFactory

SHORT = {"limits": {"command_timeout": 2}}


async def test_plaintext_pipelined_after_starttls_is_discarded(
    running: ServerFactory, client_tls: ssl.SSLContext
) -> None:
    """CVE-2011-0411 / CVE-2024-34083 / RFC 3207 section 4.2: commands injected in the
    same packet as STARTTLS must never run inside the TLS session."""
    server = await running(**PLAIN_OK)
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    injected = (
        "STARTTLS\r\nEHLO evil\r\nAUTH PLAIN " + plain() + "\r\nMAIL FROM:<evil@x.test>\r\n"
        "RCPT TO:<victim@x.test>\r\nNOOP\r\n"
    )
    await c.send(injected)  # one write: one segment
    assert (await c.reply()).code == 220
    await asyncio.wait_for(c.writer.start_tls(client_tls, server_hostname=""), 10)
    # Nothing of the injected commands was answered inside TLS: the first reply
    # we read is the one to our own first command, and the state is fresh.
    resp = await c.cmd("MAIL FROM:<a@x.test>")
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp  # no EHLO carried over
    resp = await c.cmd("EHLO again")
    assert "AUTH" in resp.text
    resp = await c.cmd("MAIL FROM:<a@x.test>")
    assert (resp.code, resp.enh) == (530, "5.7.0"), resp  # no AUTH carried over
    assert await c.quiet(0.3) == b""
    await c.close()


async def test_plaintext_arriving_after_starttls_reply_breaks_the_handshake(
    running: ServerFactory,
) -> None:
    """RFC 3207 section 4.2: bytes sent after our 220 are TLS, not commands."""
    server = await running(**SHORT)
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    assert (await c.cmd("STARTTLS")).code == 220
    await c.send("EHLO evil\r\nNOOP\r\n")
    got = await c.closed(5)
    assert b"250" not in got, got  # never answered as SMTP


async def test_state_fully_reset_after_starttls(
    running: ServerFactory, client_tls: ssl.SSLContext
) -> None:
    """RFC 3207 section 4.2: no EHLO, no AUTH, no envelope survives STARTTLS."""
    server = await running(**PLAIN_OK)
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    await c.login()  # plaintext AUTH allowed by this config
    assert (await c.cmd("MAIL FROM:<a@x.test>")).code == 250
    await c.starttls(client_tls)
    assert (await c.cmd("RCPT TO:<b@x.test>")).code == 503  # no EHLO
    resp = await c.ehlo()
    assert "STARTTLS" not in resp.text
    resp = await c.cmd("RCPT TO:<b@x.test>")
    assert (resp.code, resp.enh) == (530, "5.7.0"), resp  # not authenticated any more
    await c.login()  # a second AUTH is possible: 503 would mean AUTH carried over
    resp = await c.cmd("RCPT TO:<b@x.test>")
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp  # MAIL did not carry over
    await c.close()


async def test_starttls_twice_is_503(running: ServerFactory, client_tls: ssl.SSLContext) -> None:
    """RFC 3207 section 4: STARTTLS on an encrypted session is a sequence error."""
    server = await running()
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    await c.starttls(client_tls)
    await c.ehlo()
    resp = await c.cmd("STARTTLS")
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    assert (await c.cmd("NOOP")).code == 250  # still usable
    # the implicit-TLS listener too
    d = await Raw.open(addr(server, "implicit"), tls=client_tls)
    await d.ehlo()
    resp = await d.cmd("STARTTLS")
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    await c.close()
    await d.close()


async def test_starttls_with_argument_is_501(running: ServerFactory) -> None:
    """RFC 3207 section 4: STARTTLS takes no parameters."""
    server = await running()
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    resp = await c.cmd("STARTTLS now")
    assert (resp.code, resp.enh) == (501, "5.5.4"), resp
    assert (await c.cmd("NOOP")).code == 250  # still in plaintext command mode
    await c.close()


async def test_starttls_not_offered_on_plain_listener(running: ServerFactory) -> None:
    """A tls="none" listener never starts TLS (502), and the session goes on."""
    server = await running()
    c = await Raw.open(addr(server, "none"))
    resp = await c.ehlo()
    assert "STARTTLS" not in resp.text
    assert (await c.cmd("STARTTLS")).code == 502
    assert (await c.cmd("NOOP")).code == 250
    await c.close()


async def test_handshake_garbage_is_dropped(running: ServerFactory) -> None:
    """Garbage instead of a ClientHello: the connection is closed at once, no SMTP reply."""
    server = await running(**SHORT)
    c = await Raw.open(addr(server, "starttls"))
    await c.ehlo()
    assert (await c.cmd("STARTTLS")).code == 220
    start = time.monotonic()
    await c.send(b"\x16\x03\x01\x00\x05hello-this-is-not-tls" * 20)
    got = await c.closed(5)
    assert time.monotonic() - start < 2.0
    assert b"250" not in got
    assert not server.connections or all(conn.closing for conn in server.connections)


async def test_never_finished_handshake_is_dropped_within_timeout(running: ServerFactory) -> None:
    """A client that says STARTTLS and then nothing (or half a ClientHello) is cut
    off at command_timeout, which also bounds the handshake (SPEC section 3)."""
    server = await running(**SHORT)
    silent = await Raw.open(addr(server, "starttls"))
    await silent.ehlo()
    assert (await silent.cmd("STARTTLS")).code == 220
    half = await Raw.open(addr(server, "starttls"))
    await half.ehlo()
    assert (await half.cmd("STARTTLS")).code == 220
    await half.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a truncated ClientHello
    start = time.monotonic()
    await asyncio.gather(silent.closed(6), half.closed(6))
    assert 1.0 < time.monotonic() - start < 4.0
    await asyncio.sleep(0.1)
    assert len(server.connections) == 0


async def test_implicit_tls_port_with_plaintext_client(running: ServerFactory) -> None:
    """A plaintext client on the implicit-TLS port gets no SMTP dialogue and is dropped."""
    server = await running(**SHORT)
    talker = await Raw.open(addr(server, "implicit"), greet=False)
    await talker.send("EHLO plain.test\r\nMAIL FROM:<a@x.test>\r\n")
    got = await talker.closed(3)
    assert b"220" not in got and b"250" not in got, got
    waiter = await Raw.open(addr(server, "implicit"), greet=False)  # waits for our 220
    start = time.monotonic()
    got = await waiter.closed(6)
    assert got == b"" and time.monotonic() - start < 4.0
    await asyncio.sleep(0.1)
    assert len(server.connections) == 0


async def test_starttls_before_ehlo_then_fresh_session(
    running: ServerFactory, client_tls: ssl.SSLContext
) -> None:
    """STARTTLS is allowed before EHLO (gsasl); afterwards AUTH still needs EHLO (503)."""
    server = await running(**merge(PLAIN_OK))
    c = await Raw.open(addr(server, "starttls"))
    await c.starttls(client_tls)
    resp = await c.cmd("AUTH PLAIN " + plain())
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    await c.ehlo()
    await c.login()
    await c.close()
