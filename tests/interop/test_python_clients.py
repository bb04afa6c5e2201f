"""Python's smtplib (PLAIN, LOGIN, CRAM-MD5) and aiosmtplib against a running smtpgate.

smtplib is blocking, so it runs in a worker thread while the event loop keeps
serving; aiosmtplib runs on the same loop as the server. Each test sends one
message and reads it back from the Maildir, checking the Received ``with``
clause (RFC 3848).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl

import aiosmtplib
import pytest

from tests.interop.conftest import PASSWORD, Gate, message_bytes, received_with


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtplib_auth(smtp: smtplib.SMTP, mechanism: str,
                 initial_response: bool = True) -> tuple[int, bytes]:
    """Authenticate with exactly ``mechanism`` (smtplib.login would pick its own).

    With ``initial_response`` smtplib sends ``AUTH PLAIN <b64>`` and, for LOGIN,
    ``AUTH LOGIN <b64-user>`` (as copiers do); without it the server prompts.
    """
    smtp.user, smtp.password = "alice", PASSWORD
    handler = {
        "PLAIN": smtp.auth_plain,
        "LOGIN": smtp.auth_login,
        "CRAM-MD5": smtp.auth_cram_md5,
    }[mechanism]
    return smtp.auth(mechanism, handler,  # type: ignore[arg-type]
                     initial_response_ok=initial_response)


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False), ("CRAM-MD5", False)],
)
async def test_smtplib_starttls(gate: Gate, mechanism: str, initial_response: bool) -> None:
    rcpt = f"smtplib-{mechanism.lower()}-{initial_response}@example.org"

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP(gate.host, gate.starttls_port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("starttls")
            smtp.starttls(context=client_tls())
            smtp.ehlo("client.test")
            assert mechanism in smtp.esmtp_features["auth"].split()
            reply = smtplib_auth(smtp, mechanism, initial_response)
            smtp.sendmail("alice@example.org", [rcpt], message_bytes(mechanism, rcpt))
            return reply

    code, text = await asyncio.to_thread(send)
    assert (code, text[:5]) == (235, b"2.7.0")
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_smtplib_implicit_tls_login(gate: Gate) -> None:
    rcpt = "smtplib-implicit@example.org"

    def send() -> None:
        with smtplib.SMTP_SSL(gate.host, gate.implicit_port, timeout=10,
                              context=client_tls()) as smtp:
            smtp.login("alice", PASSWORD)  # smtplib's own choice among the advertised ones
            smtp.sendmail("alice@example.org", [rcpt], message_bytes("implicit", rcpt))

    await asyncio.to_thread(send)
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_smtplib_cram_md5_without_tls_is_esmtpa(gate: Gate) -> None:
    """CRAM-MD5 sends no password, so it is offered without TLS; PLAIN and LOGIN are not."""
    rcpt = "smtplib-cleartext@example.org"

    def send() -> list[str]:
        with smtplib.SMTP(gate.host, gate.plain_port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            advertised = smtp.esmtp_features["auth"].split()
            smtplib_auth(smtp, "CRAM-MD5")
            smtp.sendmail("alice@example.org", [rcpt], message_bytes("cleartext", rcpt))
            return advertised

    advertised = await asyncio.to_thread(send)
    assert advertised == ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
    assert received_with(gate.only_message(rcpt)) == "ESMTPA"


async def test_smtplib_wrong_cram_md5_is_535(gate: Gate) -> None:
    def attempt() -> None:
        with smtplib.SMTP(gate.host, gate.starttls_port, timeout=10) as smtp:
            smtp.starttls(context=client_tls())
            smtp.ehlo("client.test")
            smtp.user, smtp.password = "alice", "not the password"
            smtp.auth("CRAM-MD5", smtp.auth_cram_md5)

    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        await asyncio.to_thread(attempt)
    assert err.value.smtp_code == 535
    detail = err.value.smtp_error
    assert (detail if isinstance(detail, bytes) else detail.encode()).startswith(b"5.7.8")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_aiosmtplib_starttls(gate: Gate, mechanism: str) -> None:
    rcpt = f"aiosmtplib-{mechanism.lower()}@example.org"
    smtp = aiosmtplib.SMTP(hostname=gate.host, port=gate.starttls_port, timeout=10,
                           start_tls=False, tls_context=client_tls(),
                           local_hostname="client.test")
    async with smtp:
        await smtp.ehlo()
        assert "plain" not in smtp.server_auth_methods  # not before TLS
        await smtp.starttls()
        await smtp.ehlo()
        assert mechanism.lower() in smtp.server_auth_methods
        auth = {
            "PLAIN": smtp.auth_plain,
            "LOGIN": smtp.auth_login,
            "CRAM-MD5": smtp.auth_crammd5,
        }[mechanism]
        response = await auth("alice", PASSWORD)
        assert (response.code, response.message[:5]) == (235, "2.7.0")
        await smtp.sendmail("alice@example.org", [rcpt], message_bytes(mechanism, rcpt))
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_aiosmtplib_implicit_tls_login(gate: Gate) -> None:
    rcpt = "aiosmtplib-implicit@example.org"
    await aiosmtplib.send(
        message_bytes("aiosmtplib-implicit", rcpt),
        sender="alice@example.org",
        recipients=[rcpt],
        hostname=gate.host,
        port=gate.implicit_port,
        use_tls=True,
        tls_context=client_tls(),
        username="alice",
        password=PASSWORD,
        timeout=10,
    )
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"
