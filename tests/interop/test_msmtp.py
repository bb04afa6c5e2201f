"""msmtp (GnuTLS + libgsasl) submitting mail with SCRAM-SHA-256 and PLAIN.

msmtp verifies our self-signed certificate for real (it is its own trust
anchor; ``tls_host_override`` names it), so these tests also prove the
generated TLS pair is usable by a strict client. msmtp 1.8.23 has no -PLUS
mechanisms; it sends SCRAM with the ``n`` flag.
"""

from __future__ import annotations

import logging

import pytest

from tests.interop.clients import TLS12, msmtp, scram_client_first
from tests.interop.conftest import Gate, received_with


@pytest.mark.parametrize("auth", ["scram-sha-256", "plain"])
async def test_msmtp_starttls(gate: Gate, auth: str) -> None:
    rcpt = f"msmtp-{auth}@example.org"
    result = await msmtp(gate, rcpt, auth)
    assert result.returncode == 0, result.describe()
    assert f"--> AUTH {auth.upper()}" in result.output
    assert "<-- 235 2.7.0" in result.output
    if auth == "scram-sha-256":
        assert scram_client_first(result).startswith("n,,n=alice,r=")
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_msmtp_scram_over_tls12(gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rcpt = "msmtp-tls12@example.org"
    result = await msmtp(gate, rcpt, "scram-sha-256",
                         tls_priorities=TLS12)
    assert result.returncode == 0, result.describe()
    # msmtp does not print the TLS version; the server logs it for each session.
    assert "TLSv1.2" in caplog.text and "TLSv1.3" not in caplog.text
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_msmtp_implicit_tls_plain(gate: Gate) -> None:
    rcpt = "msmtp-implicit@example.org"
    result = await msmtp(gate, rcpt, "plain", implicit=True)
    assert result.returncode == 0, result.describe()
    assert "STARTTLS" not in result.output
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_msmtp_wrong_password(gate: Gate) -> None:
    rcpt = "msmtp-wrong@example.org"
    result = await msmtp(gate, rcpt, "scram-sha-256", password="not the password")
    assert result.returncode != 0
    assert "535 5.7.8" in result.output, result.describe()
    assert gate.stored(rcpt) == []
