"""SPEC section 4 over real sockets: one test per row of the reply table and per further rule.

Exact bytes go over raw asyncio streams (no SMTP library in between): plain
TCP, implicit TLS (``ssl=``) and STARTTLS (``StreamWriter.start_tls``). The
``running`` fixture starts a real Server with listeners [starttls, implicit,
none] and user alice; failure_delay is 0 except where a test measures it.
Every row runs twice: against an in-process Server, and against ``smtpgate
serve`` with two worker processes on each port (``tests/e2e/cluster.py``),
since the contract holds for the server, whichever worker answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from passlib.hash import sha512_crypt

from smtpgate.credentials.base import Account, SecretsUpdate, StoreUnavailable
from smtpgate.credentials.users import set_password
from smtpgate.server.app import Server
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import PASSWORD, ServerFactory, create_user, free_port, serving
from tests.sasl.clients import ScramClient, cram_md5_response, plain_message

STARTTLS, IMPLICIT, NONE = 0, 1, 2
ALL = b"SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 PLAIN LOGIN"
TIMEOUT = 10.0


def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def plain_b64(user: str = "alice", password: str = PASSWORD, authzid: str = "") -> bytes:
    return b64(plain_message(user, password, authzid))


def expect(reply: bytes, status: str) -> None:
    """One reply line starting ``<code> <enhanced> `` (the text may vary)."""
    assert reply.startswith(status.encode() + b" "), reply
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1, reply


class Smtp:
    """A raw SMTP client: send exact bytes, read whole (multi-line) replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> bytes:
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            assert line, f"connection closed after {b''.join(lines)!r}"
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: bytes | str) -> bytes:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def ehlo(self, name: str = "client.test") -> bytes:
        reply = await self.cmd(f"EHLO {name}")
        assert reply.startswith(b"250-") or reply.startswith(b"250 "), reply
        return reply

    async def auth_list(self) -> bytes | None:
        """The mechanisms of the EHLO AUTH line, or None if there is none."""
        for line in (await self.ehlo()).split(b"\r\n"):
            if line[4:9] == b"AUTH ":
                return line[9:]
        return None

    async def starttls(self) -> None:
        expect(await self.cmd("STARTTLS"), "220 2.0.0")
        await self.writer.start_tls(_client_context())

    async def eof(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    def ssl_object(self) -> ssl.SSLObject:
        obj = self.writer.get_extra_info("ssl_object")
        assert obj is not None
        return obj  # type: ignore[no-any-return]


@asynccontextmanager
async def connect(server: Server, listener: int = STARTTLS, *, greet: bool = True,
                  tls: ssl.SSLContext | None = None) -> AsyncIterator[Smtp]:
    host, port = server.addresses[listener]
    if server.config.listeners[listener].tls == "implicit" and tls is None:
        tls = _client_context()
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    client = Smtp(reader, writer)
    try:
        if greet:
            greeting = await client.reply()
            assert greeting.startswith(b"220 mx.test "), greeting
        yield client
    finally:
        writer.close()
        with suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)


@asynccontextmanager
async def ready(server: Server, listener: int = IMPLICIT) -> AsyncIterator[Smtp]:
    """Connected, greeted, EHLO done (on TLS unless the listener is NONE)."""
    async with connect(server, listener) as client:
        await client.ehlo()
        yield client


async def scram_auth(client: Smtp, mechanism: str = "SCRAM-SHA-256", user: str = "alice",
                     password: str = PASSWORD, *, spelled: str | None = None,
                     **kwargs: Any) -> bytes:
    """Run SCRAM with an initial response; returns the final reply.

    ``spelled``: the mechanism name as written in the AUTH command.
    """
    scram = ScramClient(mechanism, user, password, **kwargs)
    name = spelled or mechanism
    reply = await client.cmd(f"AUTH {name} ".encode() + b64(scram.client_first()))
    if not reply.startswith(b"334 "):
        return reply
    server_first = base64.b64decode(reply[4:].strip())
    reply = await client.cmd(b64(scram.client_final(server_first)))
    if not reply.startswith(b"334 "):
        return reply
    assert scram.verify_server_final(base64.b64decode(reply[4:].strip())), reply
    return await client.cmd(b"")  # RFC 4422 section 5: empty response to the server-final


async def authed(client: Smtp) -> None:
    expect(await client.cmd(b"AUTH PLAIN " + plain_b64()), "235 2.7.0")


class FailingStore:
    async def get(self, name: str) -> Account | None:
        raise StoreUnavailable("database is locked")

    def kept(self, name: str) -> Account | None:
        return None

    async def update_secrets(self, name: str, update: SecretsUpdate, **kwargs: Any) -> None:
        raise StoreUnavailable("database is locked")


@pytest.fixture(params=[1, 2], ids=["1-process", "2-workers"])
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    async with serving(tmp_path, workers=request.param) as start:
        yield start


# == the table, row by row ========================================================


async def test_235_authentication_succeeded(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        reply = await c.cmd(b"AUTH PLAIN " + plain_b64())
        expect(reply, "235 2.7.0")
    async with ready(server, STARTTLS) as c:  # SCRAM needs no TLS
        expect(await scram_auth(c), "235 2.7.0")
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0")


async def test_334_server_challenge_and_empty_one(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"  # exactly "334 " when empty
        expect(await c.cmd(plain_b64()), "235 2.7.0")
    async with ready(server, STARTTLS) as c:
        assert await c.cmd("AUTH SCRAM-SHA-256") == b"334 \r\n"
        scram = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
        reply = await c.cmd(b64(scram.client_first()))
        assert reply.startswith(b"334 ") and reply.endswith(b"\r\n")
        server_first = base64.b64decode(reply[4:-2], validate=True)
        assert server_first.startswith(b"r=" + scram.cnonce.encode())
        reply = await c.cmd(b64(scram.client_final(server_first)))
        # the SCRAM server-final goes out as a 334 challenge; an empty answer gets 235
        assert reply.startswith(b"334 ")
        assert scram.verify_server_final(base64.b64decode(reply[4:-2], validate=True))
        expect(await c.cmd(b""), "235 2.7.0")


async def test_scram_server_final_answered_non_empty_fails(running: ServerFactory) -> None:
    server = await running()
    async with ready(server, STARTTLS) as c:
        scram = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
        reply = await c.cmd(b"AUTH SCRAM-SHA-256 " + b64(scram.client_first()))
        reply = await c.cmd(b64(scram.client_final(base64.b64decode(reply[4:-2]))))
        assert reply.startswith(b"334 ")
        expect(await c.cmd(b64("unexpected")), "501 5.5.2")
        expect(await c.cmd("MAIL FROM:<a@b>"), "530 5.7.0")  # not authenticated


async def _add_legacy(server: Server) -> None:
    stored = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD)
    await server.store.add(Account("legacy", password_hash=stored))


async def test_432_password_transition(running: ServerFactory) -> None:
    server = await running(auth={"mechanisms": [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]})
    await _add_legacy(server)
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c, user="legacy"), "432 4.7.12")
        expect(await scram_auth(c, "SCRAM-SHA-1", user="legacy"), "432 4.7.12")
        challenge = await c.cmd("AUTH CRAM-MD5")
        answer = cram_md5_response("legacy", PASSWORD, base64.b64decode(challenge[4:-2]))
        expect(await c.cmd(b64(answer)), "432 4.7.12")
        # 432 is no failure: three of them did not close the connection (max 3)
        expect(await c.cmd("NOOP"), "250 2.0.0")
        # one PLAIN login over TLS stores the missing secrets ...
        await c.starttls()
        await c.ehlo()
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64("legacy")), "235 2.7.0")
    stored = await server.store.get("legacy")
    assert stored is not None and stored.password_hash is not None
    assert stored.password_hash.startswith("{ARGON2ID}")
    # ... so the next SCRAM and CRAM-MD5 succeed
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c, user="legacy"), "235 2.7.0")
    async with ready(server, NONE) as c:
        challenge = await c.cmd("AUTH CRAM-MD5")
        answer = cram_md5_response("legacy", PASSWORD, base64.b64decode(challenge[4:-2]))
        expect(await c.cmd(b64(answer)), "235 2.7.0")


async def test_454_store_failing(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 2})
    if isinstance(server, Cluster):
        pytest.skip("injects a store object in-process; 454_store_broken_on_disk runs on workers")
    server.auth.store = FailingStore()
    async with ready(server) as c:
        for _ in range(3):  # not counted: no 421 although max_failures_per_connection = 2
            expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "454 4.7.0")
        expect(await scram_auth(c), "454 4.7.0")
        assert await c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert await c.cmd(b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        expect(await c.cmd(b64(PASSWORD)), "454 4.7.0")
        expect(await c.cmd("NOOP"), "250 2.0.0")


async def test_454_store_broken_on_disk(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        await authed(c)
    db = sqlite3.connect(server.config.data_dir / "users.db")
    db.execute("DROP TABLE users")
    db.commit()
    db.close()
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "454 4.7.0")
        expect(await scram_auth(c), "454 4.7.0")


async def test_454_ip_blocked_without_checking(running: ServerFactory) -> None:
    server = await running(auth={"ip_failure_limit": 2, "max_failures_per_connection": 10})
    async with ready(server) as c:
        for _ in range(2):
            expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "454 4.7.0")
    async with ready(server) as c:  # a new connection from the same IP: still blocked
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "454 4.7.0")
        expect(await c.cmd("AUTH XOAUTH2"), "454 4.7.0")
        expect(await c.cmd("MAIL FROM:<a@b>"), "530 5.7.0")


async def test_500_5_5_6_auth_lines_too_long(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 10})
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + b"A" * 13000), "500 5.5.6")
        expect(await c.cmd("NOOP"), "250 2.0.0")  # the rest of the line did not leak
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd(b"A" * 13000), "500 5.5.6")
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd(b"A" * 12287), "500 5.5.6")  # 12289 octets with CRLF
        # 12288 octets with CRLF is still allowed: a (huge) PLAIN message, wrong password
        message = plain_message("alice", "x" * 9100)
        line = b64(message + b"y" * (9213 - len(message)))
        assert len(line) + 2 <= 12288
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd(line), "535 5.7.8")
        await authed(c)


async def test_501_5_5_2_bad_base64(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 10})
    async with ready(server) as c:
        expect(await c.cmd("AUTH PLAIN !!notbase64!!"), "501 5.5.2")
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd("AGFsaWNl=AA"), "501 5.5.2")  # padding in the middle
        assert await c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        expect(await c.cmd("YWxpY2U"), "501 5.5.2")  # unpadded
        await authed(c)


async def test_501_5_7_0_cancel(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 10})
    async with ready(server) as c:
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd("*"), "501 5.7.0")
        assert await c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert await c.cmd(b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        expect(await c.cmd("*"), "501 5.7.0")
        expect(await c.cmd("AUTH PLAIN *"), "501 5.7.0")
        reply = await c.cmd(b"AUTH SCRAM-SHA-256 " + b64(ScramClient(
            "SCRAM-SHA-256", "alice", PASSWORD).client_first()))
        assert reply.startswith(b"334 ")
        expect(await c.cmd("*"), "501 5.7.0")
        await authed(c)


async def test_501_5_7_0_initial_response_to_cram_md5(running: ServerFactory) -> None:
    server = await running(auth={"mechanisms": ["CRAM-MD5", "SCRAM-SHA-256", "PLAIN"]})
    async with ready(server, NONE) as c:
        expect(await c.cmd(b"AUTH CRAM-MD5 " + b64("alice 0123456789abcdef")), "501 5.7.0")
        expect(await c.cmd("AUTH CRAM-MD5 ="), "501 5.7.0")
        challenge = await c.cmd("AUTH cram-md5")  # and the real thing works
        answer = cram_md5_response("alice", PASSWORD, base64.b64decode(challenge[4:-2]))
        expect(await c.cmd(b64(answer)), "235 2.7.0")


async def test_501_5_5_4_auth_without_mechanism(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        expect(await c.cmd("AUTH"), "501 5.5.4")
        expect(await c.cmd("AUTH "), "501 5.5.4")
        await authed(c)


async def test_503_auth_before_ehlo_after_helo_after_success(running: ServerFactory) -> None:
    server = await running()
    async with connect(server, IMPLICIT) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")  # before EHLO
        assert await c.cmd("HELO client.test") == b"250 mx.test\r\n"
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")  # after HELO
        await c.ehlo()
        await authed(c)
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")  # after success
        expect(await c.cmd("AUTH SCRAM-SHA-256"), "503 5.5.1")
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")  # in a transaction


async def test_503_auth_inside_a_transaction(running: ServerFactory) -> None:
    server = await running(listener=[
        {"address": f"127.0.0.1:{free_port()}", "tls": "implicit", "require_auth": False}])
    async with ready(server, 0) as c:
        expect(await c.cmd("MAIL FROM:<someone@example.org>"), "250 2.1.0")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")
        expect(await c.cmd("RCPT TO:<bob@example.org>"), "250 2.1.5")
        expect(await c.cmd("AUTH SCRAM-SHA-256"), "503 5.5.1")
        expect(await c.cmd("RSET"), "250 2.0.0")
        await authed(c)  # outside the transaction it works


async def test_504_unknown_or_disabled_mechanism(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 1})
    async with ready(server) as c:
        expect(await c.cmd("AUTH XOAUTH2"), "504 5.5.4")
        expect(await c.cmd("AUTH CRAM-MD5"), "504 5.5.4")  # supported, but off by default
        expect(await c.cmd("AUTH GSSAPI ="), "504 5.5.4")
        await authed(c)  # 504 is no failure, even with max_failures_per_connection = 1


NON_EXEMPT = [
    ("MAIL FROM:<alice@example.org>", b""),
    ("RCPT TO:<bob@example.org>", b""),
    ("DATA", b""),
    ("BDAT 5 LAST", b"NOOP\n"),  # its octets are read and dropped, never run
    ("VRFY alice", b""),
    ("EXPN staff", b""),
    ("HELP", b""),
    ("HELP AUTH", b""),
]


async def test_530_every_non_exempt_command_before_auth(running: ServerFactory) -> None:
    server = await running(limits={"max_errors": 100})
    async with ready(server) as c:
        for command, payload in NON_EXEMPT:
            await c.send(command.encode() + b"\r\n" + payload)
            expect(await c.reply(), "530 5.7.0")
        await authed(c)
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0")
        expect(await c.cmd("RCPT TO:<bob@example.org>"), "250 2.1.5")
        expect(await c.cmd("VRFY alice"), "252 2.5.0")
        expect(await c.cmd("HELP"), "214 2.0.0")


async def test_530_exempt_commands_work_before_auth(running: ServerFactory) -> None:
    server = await running()
    async with connect(server, STARTTLS) as c:
        expect(await c.cmd("NOOP"), "250 2.0.0")
        expect(await c.cmd("RSET"), "250 2.0.0")
        assert await c.cmd("HELO client.test") == b"250 mx.test\r\n"
        await c.ehlo()
        expect(await c.cmd("NOOP"), "250 2.0.0")
        expect(await c.cmd("RSET"), "250 2.0.0")
        assert (await c.cmd("AUTH PLAIN")).startswith(b"538 5.7.11")  # AUTH itself: no 530
        await c.starttls()
        await c.ehlo()
        assert await c.cmd("AUTH PLAIN") == b"334 \r\n"
        expect(await c.cmd("*"), "501 5.7.0")
        expect(await c.cmd("QUIT"), "221 2.0.0")
        assert await c.eof() == b""


async def test_534_mechanism_too_weak_for_account(running: ServerFactory) -> None:
    server = await running()
    await create_user(server.config, "scanner", "scanner secret",
                      allow_mechanisms=["SCRAM-SHA-256"])
    async with ready(server) as c:
        # checked only after the credentials verified: a wrong password is still 535
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64("scanner", "wrong")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64("scanner", "scanner secret")), "534 5.7.9")
        expect(await scram_auth(c, "SCRAM-SHA-1", "scanner", "scanner secret"), "534 5.7.9")
        expect(await scram_auth(c, "SCRAM-SHA-256", "scanner", "scanner secret"), "235 2.7.0")


async def test_535_invalid_credentials(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 10})
    await create_user(server.config, "boss", "boss password", may_act_as=["sales@example.org"])
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(user="nobody")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(authzid="boss")), "535 5.7.8")
        expect(await c.cmd("AUTH PLAIN ="), "535 5.7.8")  # an empty PLAIN response
        expect(await scram_auth(c, password="wrong"), "535 5.7.8")
        expect(await scram_auth(c, user="nobody"), "535 5.7.8")
        expect(await scram_auth(c, authzid="boss"), "535 5.7.8")
        expect(await c.cmd("MAIL FROM:<a@b>"), "530 5.7.0")
    async with ready(server) as c:  # allowed identities work
        reply = await c.cmd(b"AUTH PLAIN " + plain_b64("boss", "boss password",
                                                      "sales@example.org"))
        expect(reply, "235 2.7.0")
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(authzid="alice")), "235 2.7.0")


async def test_538_encryption_required(running: ServerFactory) -> None:
    server = await running()
    async with ready(server, NONE) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "538 5.7.11")
        expect(await c.cmd("AUTH PLAIN"), "538 5.7.11")
        expect(await c.cmd("AUTH LOGIN"), "538 5.7.11")
        expect(await c.cmd(b"AUTH LOGIN " + b64("alice")), "538 5.7.11")
        expect(await c.cmd("AUTH SCRAM-SHA-256-PLUS"), "538 5.7.11")
        expect(await c.cmd("AUTH SCRAM-SHA-1-PLUS"), "538 5.7.11")
        expect(await scram_auth(c), "235 2.7.0")  # 538 is no failure (max 3)
    async with ready(server, STARTTLS) as c:  # before STARTTLS
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "538 5.7.11")
        expect(await scram_auth(c, "SCRAM-SHA-256-PLUS", cb_type="tls-server-end-point",
                                cb_data=b"x" * 32), "538 5.7.11")


@pytest.mark.parametrize("listener", [NONE, IMPLICIT])
async def test_421_after_max_failures_then_close(running: ServerFactory, listener: int) -> None:
    server = await running(auth={"max_failures_per_connection": 3,
                                 "plaintext_requires_tls": False})
    async with ready(server, listener) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(user="nobody")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "421 4.7.0")
        assert await c.eof() == b""


# == further rules =================================================================


async def test_ehlo_lists_exactly_the_usable_mechanisms(running: ServerFactory) -> None:
    server = await running()
    async with connect(server, STARTTLS) as c:
        assert await c.auth_list() == b"SCRAM-SHA-256 SCRAM-SHA-1"  # no PLAIN/LOGIN/-PLUS
        await c.starttls()
        assert await c.auth_list() == ALL
    async with connect(server, IMPLICIT) as c:
        assert await c.auth_list() == ALL
    async with connect(server, NONE) as c:
        assert await c.auth_list() == b"SCRAM-SHA-256 SCRAM-SHA-1"


async def test_ehlo_keeps_the_configured_order(running: ServerFactory) -> None:
    server = await running(auth={"mechanisms": [
        "PLAIN", "SCRAM-SHA-1", "CRAM-MD5", "SCRAM-SHA-256-PLUS", "LOGIN"]})
    async with connect(server, STARTTLS) as c:
        assert await c.auth_list() == b"SCRAM-SHA-1 CRAM-MD5"
        await c.starttls()
        assert await c.auth_list() == b"PLAIN SCRAM-SHA-1 CRAM-MD5 SCRAM-SHA-256-PLUS LOGIN"


async def test_ehlo_plaintext_allowed_without_tls(running: ServerFactory) -> None:
    server = await running(auth={"plaintext_requires_tls": False})
    async with connect(server, NONE) as c:
        assert await c.auth_list() == b"SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN"  # never -PLUS
        await authed(c)


async def test_ehlo_without_usable_mechanism_has_no_auth_line(running: ServerFactory) -> None:
    server = await running(auth={"mechanisms": ["SCRAM-SHA-256-PLUS", "PLAIN", "LOGIN"]})
    async with connect(server, NONE) as c:
        reply = await c.ehlo()
        assert b"AUTH" not in reply
        assert b"STARTTLS" not in reply
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "538 5.7.11")
    async with connect(server, IMPLICIT) as c:
        assert await c.auth_list() == b"SCRAM-SHA-256-PLUS PLAIN LOGIN"


async def test_ehlo_after_success_still_lists_and_auth_is_503(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        await authed(c)
        assert await c.auth_list() == ALL
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "503 5.5.1")
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0")  # still authed


async def test_plus_mechanisms_bind_to_the_tls_channel(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        der = c.ssl_object().getpeercert(binary_form=True)
        assert der is not None
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
        assert algorithm is not None
        end_point = hashlib.new(algorithm.name, der).digest()
        assert c.ssl_object().version() == "TLSv1.3"
        # tls-unique does not exist on TLS 1.3
        expect(await scram_auth(c, "SCRAM-SHA-256-PLUS", cb_type="tls-unique",
                                cb_data=b"u" * 12), "535 5.7.8")
        # another channel's data (a man in the middle): refused
        expect(await scram_auth(c, "SCRAM-SHA-1-PLUS", cb_type="tls-server-end-point",
                                cb_data=b"\0" * len(end_point)), "535 5.7.8")
        expect(await scram_auth(c, "SCRAM-SHA-256-PLUS", cb_type="tls-server-end-point",
                                cb_data=end_point), "235 2.7.0")


async def test_plus_tls_unique_on_tls12(running: ServerFactory) -> None:
    server = await running()
    ctx = _client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with connect(server, IMPLICIT, tls=ctx) as c:
        await c.ehlo()
        assert c.ssl_object().version() == "TLSv1.2"
        unique = c.ssl_object().get_channel_binding("tls-unique")
        assert unique
        expect(await scram_auth(c, "SCRAM-SHA-1-PLUS", cb_type="tls-unique", cb_data=unique),
               "235 2.7.0")


async def test_max_failures_counts_malformed_and_cancel(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 3})
    async with ready(server) as c:
        expect(await c.cmd("AUTH PLAIN !!!"), "501 5.5.2")
        assert await c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        expect(await c.cmd("*"), "501 5.7.0")
        expect(await c.cmd("AUTH PLAIN ="), "421 4.7.0")
        assert await c.eof() == b""


async def test_not_counted_outcomes_never_lead_to_421(running: ServerFactory) -> None:
    server = await running(auth={"max_failures_per_connection": 2})
    await create_user(server.config, "scanner", "scanner secret", allow_mechanisms=["LOGIN"])
    await _add_legacy(server)
    async with ready(server) as c:
        for _ in range(3):
            expect(await c.cmd("AUTH XOAUTH2"), "504 5.5.4")
            expect(await c.cmd(b"AUTH PLAIN " + plain_b64("scanner", "scanner secret")),
                   "534 5.7.9")
            expect(await scram_auth(c, user="legacy"), "432 4.7.12")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "421 4.7.0")


async def test_failure_count_survives_starttls(running: ServerFactory) -> None:
    # "too many failed AUTH on one connection": STARTTLS resets the SMTP session
    # (RFC 3207), not the connection's failure count.
    server = await running(auth={"max_failures_per_connection": 3})
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c, password="wrong"), "535 5.7.8")
        expect(await scram_auth(c, password="wrong"), "535 5.7.8")
        await c.starttls()
        await c.ehlo()
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="wrong")), "421 4.7.0")


async def test_mechanism_names_are_case_insensitive(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        expect(await c.cmd(b"auth plain " + plain_b64()), "235 2.7.0")
    async with ready(server) as c:
        assert await c.cmd("AuTh LoGiN") == b"334 VXNlcm5hbWU6\r\n"
        assert await c.cmd(b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        expect(await c.cmd(b64(PASSWORD)), "235 2.7.0")
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c, spelled="scram-sha-256"), "235 2.7.0")
        assert await c.auth_list() == b"SCRAM-SHA-256 SCRAM-SHA-1"


async def test_unknown_command_500_in_any_state(running: ServerFactory) -> None:
    server = await running()
    async with connect(server, IMPLICIT) as c:
        expect(await c.cmd("XYZZY"), "500 5.5.1")  # before EHLO
        await c.ehlo()
        expect(await c.cmd("XYZZY"), "500 5.5.1")  # before AUTH: 500, not 530
        await authed(c)
        expect(await c.cmd("XYZZY"), "500 5.5.1")
        expect(await c.cmd("MAIL FROM:<a@b>"), "250 2.1.0")
        expect(await c.cmd("XYZZY now"), "500 5.5.1")


async def test_503_before_ehlo_takes_precedence_over_530(running: ServerFactory) -> None:
    server = await running(limits={"max_errors": 100})
    async with connect(server, STARTTLS) as c:
        for command in ("MAIL FROM:<a@b>", "RCPT TO:<b@c>", "DATA", "BDAT 0 LAST",
                        "AUTH PLAIN"):
            expect(await c.cmd(command), "503 5.5.1")
        await c.starttls()  # STARTTLS itself is accepted before EHLO (gsasl)
        for command in ("MAIL FROM:<a@b>", "RCPT TO:<b@c>", "DATA", "BDAT 0 LAST",
                        "AUTH PLAIN"):
            expect(await c.cmd(command), "503 5.5.1")
        await c.ehlo()
        expect(await c.cmd("MAIL FROM:<a@b>"), "530 5.7.0")


async def test_initial_responses(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "235 2.7.0")
    async with ready(server) as c:
        # "=" is an empty initial response (a failed PLAIN login), not "no response"
        expect(await c.cmd("AUTH PLAIN ="), "535 5.7.8")
        # AUTH LOGIN <b64-user>, as copiers send it: only the password is asked for
        assert await c.cmd(b"AUTH LOGIN " + b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        expect(await c.cmd(b64(PASSWORD)), "235 2.7.0")


async def test_login_prompts_are_exact(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        assert await c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert await c.cmd(b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        expect(await c.cmd(b64(PASSWORD)), "235 2.7.0")


async def test_mail_from_auth_parameter_is_accepted(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        await authed(c)
        expect(await c.cmd("MAIL FROM:<a@b> AUTH=<>"), "250 2.1.0")
        expect(await c.cmd("RSET"), "250 2.0.0")
        expect(await c.cmd("MAIL FROM:<alice@example.org> AUTH=alice+40example.org"),
               "250 2.1.0")
        expect(await c.cmd("RCPT TO:<bob@example.org>"), "250 2.1.5")
        expect(await c.cmd("DATA"), "354")
        expect(await c.cmd("Subject: hi\r\n\r\nhello\r\n."), "250 2.0.0")


async def test_starttls_forgets_the_old_session(running: ServerFactory) -> None:
    server = await running()
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c), "235 2.7.0")  # authenticated in plaintext ...
        await c.starttls()
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "503 5.5.1")  # EHLO required
        assert await c.auth_list() == ALL
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "530 5.7.0")  # ... no longer
        await authed(c)
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0")


async def test_starttls_discards_pipelined_plaintext(running: ServerFactory) -> None:
    server = await running()
    async with connect(server, STARTTLS) as c:
        await c.ehlo()
        await c.send(b"STARTTLS\r\nEHLO injected\r\nAUTH PLAIN " + plain_b64() + b"\r\n")
        expect(await c.reply(), "220 2.0.0")
        await c.writer.start_tls(_client_context())
        expect(await c.cmd("NOOP"), "250 2.0.0")  # the injected EHLO/AUTH never ran
        expect(await c.cmd("MAIL FROM:<alice@example.org>"), "503 5.5.1")


async def test_unknown_user_and_wrong_password_identical_and_delayed(
    running: ServerFactory,
) -> None:
    server = await running(auth={"failure_delay": 0.2, "max_failures_per_connection": 10})
    replies, times = [], []
    async with ready(server) as c:
        for user, password in (("alice", "wrong"), ("nobody", "wrong"), ("alice", "wrong"),
                               ("nobody", PASSWORD)):
            start = time.monotonic()
            replies.append(await c.cmd(b"AUTH PLAIN " + plain_b64(user, password)))
            times.append(time.monotonic() - start)
        start = time.monotonic()
        expect(await c.cmd("AUTH PLAIN *"), "501 5.7.0")  # a cancel is delayed too
        times.append(time.monotonic() - start)
        scram_replies = [await scram_auth(c, password="wrong"), await scram_auth(c, user="x")]
    assert len(set(replies)) == 1 and replies[0].startswith(b"535 5.7.8 ")
    assert len(set(scram_replies)) == 1 and scram_replies[0] == replies[0]
    assert min(times) >= 0.2, times


async def test_user_changes_take_effect_at_next_auth(running: ServerFactory) -> None:
    server = await running()
    async with ready(server) as c:
        await authed(c)  # now the password is in the verified-credentials cache
    await set_password(server.store, "alice", "brand new", cram_md5=False)
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64()), "535 5.7.8")
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="brand new")), "235 2.7.0")
    async with ready(server, STARTTLS) as c:
        expect(await scram_auth(c, password="brand new"), "235 2.7.0")
    await server.store.delete("alice")
    async with ready(server) as c:
        expect(await c.cmd(b"AUTH PLAIN " + plain_b64(password="brand new")), "535 5.7.8")
