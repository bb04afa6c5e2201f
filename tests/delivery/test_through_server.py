"""Delivery through a real Server and smtplib: refusals at RCPT, separate Maildirs for
addresses that differ outside ASCII, and no AUTH= value in any stored header."""

from __future__ import annotations

import smtplib
from functools import partial
from pathlib import Path

from smtpgate.delivery.envelopes import read_envelopes
from smtpgate.server.app import Server
from tests.delivery.test_maildir import LONG_BUT_VALID
from tests.e2e.conftest import PASSWORD, ServerFactory, in_thread

OPEN_PLAIN = {"auth": {"plaintext_requires_tls": False}}
MESSAGE = b"Subject: t\r\n\r\nbody\r\n"


def _client(server: Server) -> smtplib.SMTP:
    index = [lst.tls for lst in server.config.listeners].index("none")
    host, port = server.addresses[index]
    client = smtplib.SMTP(host, port, timeout=10)
    client.ehlo("client.test")
    client.login("alice", PASSWORD)
    return client


def _new(server: Server, mailbox: str) -> list[Path]:
    return sorted((server.config.data_dir / "mail" / mailbox / "new").glob("*"))


def _transaction(server: Server, rcpts: list[str], mail_options: list[str]) -> list[int]:
    """MAIL, one RCPT each, DATA if any was accepted: the RCPT codes, then DATA's."""
    with _client(server) as client:
        client.command_encoding = "utf-8"  # SMTPUTF8 addresses (RFC 6531)
        assert client.mail("alice@x.test", mail_options)[0] == 250
        codes = [client.rcpt(rcpt)[0] for rcpt in rcpts]
        if 250 in codes:
            codes.append(client.data(MESSAGE)[0])
    return codes


async def test_unstorable_recipient_is_refused_at_rcpt_and_the_rest_delivers(
    running: ServerFactory,
) -> None:
    """Needs the server to call check_recipient at RCPT (wired on the server branch)."""
    server = await running(**OPEN_PLAIN)

    def talk() -> tuple[tuple[int, bytes], ...]:
        with _client(server) as client:
            client.mail("alice@x.test")
            replies = (client.rcpt("bob@x.test"), client.rcpt(LONG_BUT_VALID))
            return (*replies, client.data(MESSAGE))

    bob, long_one, data = await in_thread(talk)
    assert bob[0] == 250
    assert long_one[0] == 553 and long_one[1].startswith(b"5.1.3 "), long_one
    assert data[0] == 250, data
    (message,) = _new(server, "bob@x.test")
    assert message.read_bytes().endswith(MESSAGE)
    assert sorted(p.name for p in (server.config.data_dir / "mail").iterdir()) == ["bob@x.test"]


async def test_kelvin_sign_and_ascii_k_get_their_own_maildirs(running: ServerFactory) -> None:
    server = await running(**OPEN_PLAIN)
    kelvin, kate = "\u212aate@x.test", "kate@x.test"
    for rcpt in (kelvin, kate):
        codes = await in_thread(partial(_transaction, server, [rcpt], ["SMTPUTF8"]))
        assert codes == [250, 250], rcpt
    assert len(_new(server, "kate@x.test")) == 1
    assert len(_new(server, "%e2%84%aaate@x.test")) == 1


async def test_auth_param_never_reaches_a_stored_header(running: ServerFactory) -> None:
    """RFC 4954 section 5: AUTH= is the client's claim about the original submitter.
    It is kept (decoded, JSON-escaped) in the envelope log for a relay to pass on,
    never in the message, neither decoded nor as sent."""
    server = await running(**OPEN_PLAIN)
    codes = await in_thread(
        lambda: _transaction(server, ["bob@x.test"], ["AUTH=origin+2Bmark@x.test"])
    )
    assert codes == [250, 250]
    (message,) = _new(server, "bob@x.test")
    stored = message.read_bytes()
    for form in (b"origin", b"+2Bmark", b"mark@x.test"):
        assert form not in stored, stored
    (record,) = read_envelopes(server.config.data_dir / "mail" / "bob@x.test")
    assert record["auth_param"] == "origin+mark@x.test"
