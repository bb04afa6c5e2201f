"""swaks (PLAIN, LOGIN, CRAM-MD5) against a running smtpgate, over STARTTLS, implicit TLS
and cleartext; every message is read back from the Maildir.

swaks needs the Perl module Net::SSLeay (Debian libnet-ssleay-perl, a Recommends
of swaks) for TLS; ``swaks --support`` tells whether it is there.
"""

from __future__ import annotations

import pytest

from tests.interop.clients import swaks, swaks_send
from tests.interop.conftest import PASSWORD, Gate, received_with


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_swaks_starttls(gate: Gate, mechanism: str) -> None:
    rcpt = f"swaks-{mechanism.lower()}@example.org"
    result = await swaks_send(gate, rcpt, mechanism)
    assert result.returncode == 0, result.describe()
    assert " ~> STARTTLS" not in result.stdout and " -> STARTTLS" in result.stdout
    assert f" ~> AUTH {mechanism}" in result.stdout, result.describe()
    assert "<~  235 2.7.0" in result.stdout
    if mechanism == "LOGIN":  # the exact prompts printers expect (SPEC section 4)
        assert "<~  334 VXNlcm5hbWU6" in result.stdout
        assert "<~  334 UGFzc3dvcmQ6" in result.stdout
    message = gate.only_message(rcpt)
    assert received_with(message) == "ESMTPSA"
    assert b"X-Mailer: swaks" in message


async def test_swaks_implicit_tls_plain(gate: Gate) -> None:
    rcpt = "swaks-implicit@example.org"
    result = await swaks(
        gate, gate.implicit_port, "--tlsc", "--auth", "PLAIN",
        "--auth-user", "alice", "--auth-password", PASSWORD, "--to", rcpt,
    )
    assert result.returncode == 0, result.describe()
    assert "<~  235 2.7.0" in result.stdout
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_swaks_cram_md5_cleartext_is_esmtpa(gate: Gate) -> None:
    rcpt = "swaks-cleartext@example.org"
    result = await swaks(
        gate, gate.plain_port, "--auth", "CRAM-MD5",
        "--auth-user", "alice", "--auth-password", PASSWORD, "--to", rcpt, tls=False,
    )
    assert result.returncode == 0, result.describe()
    assert "<-  250 AUTH SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5" in result.stdout
    assert received_with(gate.only_message(rcpt)) == "ESMTPA"


async def test_swaks_wrong_password_is_535_and_nothing_stored(gate: Gate) -> None:
    rcpt = "swaks-wrong@example.org"
    result = await swaks_send(gate, rcpt, "PLAIN", password="not the password")
    assert result.returncode != 0
    assert "<~* 535 5.7.8" in result.stdout, result.describe()
    assert gate.stored(rcpt) == []


async def test_swaks_plain_not_offered_without_tls(gate: Gate) -> None:
    """Without TLS PLAIN is not advertised, so swaks never sends the password."""
    rcpt = "swaks-cleartext-plain@example.org"
    result = await swaks(
        gate, gate.plain_port, "--auth", "PLAIN", "--auth-user", "alice",
        "--auth-password", PASSWORD, "--to", rcpt, tls=False,
    )
    assert result.returncode != 0
    assert "requested type not available" in result.stderr, result.describe()
    assert "-> AUTH" not in result.stdout
    assert gate.stored(rcpt) == []


async def test_swaks_pipelining_two_recipients(gate: Gate) -> None:
    """swaks --pipeline sends MAIL, both RCPTs and DATA in one write (RFC 2920)."""
    rcpts = ["swaks-pipe-1@example.org", "Swaks-Pipe-2@Example.org"]
    result = await swaks(
        gate, gate.starttls_port, "--tls", "--pipeline", "--auth", "LOGIN",
        "--auth-user", "alice", "--auth-password", PASSWORD, "--to", ",".join(rcpts),
    )
    assert result.returncode == 0, result.describe()
    assert " ~> MAIL FROM:<alice@example.org>\n ~> RCPT TO:<swaks-pipe-1@example.org>" \
        in result.stdout, result.describe()
    for rcpt in rcpts:  # the Maildir folder is the lower-cased address
        message = gate.only_message(rcpt)
        assert received_with(message) == "ESMTPSA"
