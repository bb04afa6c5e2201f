"""Python's smtplib against a running smtpgate: plain, STARTTLS, implicit TLS, Maildir."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, ServerFactory, in_thread


def message(to: str = "bob@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = to
    msg["Subject"] = "hello"
    msg.set_content("Hello Bob.\n.leading dot line\n")
    return msg


def stored(server_data: Path, rcpt: str) -> list[bytes]:
    new = server_data / "mail" / rcpt / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


async def test_starttls_plain_login_and_maildir(running: ServerFactory,
                                               client_tls: ssl.SSLContext) -> None:
    server = await running()
    host, port = server.addresses[0]

    def send() -> None:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.ehlo()
            before = smtp.esmtp_features["auth"].split()
            assert "PLAIN" not in before and "SCRAM-SHA-256" in before  # PLAIN needs TLS
            smtp.starttls(context=client_tls)
            smtp.ehlo()
            assert "PLAIN" in smtp.esmtp_features["auth"]
            smtp.login("alice", PASSWORD)
            smtp.send_message(message())

    await in_thread(send)
    (msg,) = stored(server.config.data_dir, "bob@example.org")
    assert msg.startswith(b"Received: from ")
    assert b"with ESMTPSA" in msg
    assert b"\r\n.leading dot line\r\n" in msg.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r")


async def test_implicit_tls_login(running: ServerFactory, client_tls: ssl.SSLContext) -> None:
    server = await running()
    host, port = server.addresses[1]

    def send() -> None:
        with smtplib.SMTP_SSL(host, port, timeout=10, context=client_tls) as smtp:
            smtp.login("alice", PASSWORD)
            smtp.send_message(message("carol@example.org"))

    await in_thread(send)
    assert len(stored(server.config.data_dir, "carol@example.org")) == 1


async def test_wrong_password_is_535(running: ServerFactory, client_tls: ssl.SSLContext) -> None:
    server = await running()
    host, port = server.addresses[1]

    def attempt() -> None:
        with smtplib.SMTP_SSL(host, port, timeout=10, context=client_tls) as smtp:
            smtp.login("alice", "wrong")

    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        await in_thread(attempt)
    assert err.value.smtp_code == 535


async def test_plaintext_auth_refused_538(running: ServerFactory) -> None:
    server = await running()
    host, port = server.addresses[2]

    def attempt() -> tuple[int, bytes]:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.ehlo()
            return smtp.docmd("AUTH", "PLAIN AGFsaWNlAHg=")

    code, text = await in_thread(attempt)
    assert code == 538 and text.startswith(b"5.7.11")
