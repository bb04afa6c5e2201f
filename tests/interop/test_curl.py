"""curl (libcurl + OpenSSL) submitting mail with PLAIN and LOGIN.

curl is a different SMTP/SASL stack from the others: it pipelines nothing
before TLS, names its EHLO after the uploaded file, and sends PLAIN as an
initial response only with ``--sasl-ir``. Both forms are exercised.
"""

from __future__ import annotations

import pytest

from tests.interop.clients import curl
from tests.interop.conftest import Gate, received_with


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_curl_starttls(gate: Gate, mechanism: str) -> None:
    rcpt = f"curl-{mechanism.lower()}@example.org"
    result = await curl(gate, rcpt, mechanism)
    assert result.returncode == 0, result.describe()
    assert "> STARTTLS" in result.output
    assert f"> AUTH {mechanism}\n" in result.output, result.describe()
    assert "< 235 2.7.0" in result.output
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_curl_plain_initial_response(gate: Gate) -> None:
    rcpt = "curl-sasl-ir@example.org"
    result = await curl(gate, rcpt, "PLAIN", "--sasl-ir")
    assert result.returncode == 0, result.describe()
    assert "> AUTH PLAIN AGFsaWNl" in result.output, result.describe()  # b64("\0alice...")
    assert "< 334" not in result.output
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_curl_implicit_tls(gate: Gate, mechanism: str) -> None:
    rcpt = f"curl-smtps-{mechanism.lower()}@example.org"
    result = await curl(gate, rcpt, mechanism, implicit=True)
    assert result.returncode == 0, result.describe()
    assert "STARTTLS" not in result.output
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"


async def test_curl_wrong_password(gate: Gate) -> None:
    rcpt = "curl-wrong@example.org"
    result = await curl(gate, rcpt, "LOGIN", password="not the password")
    assert result.returncode == 67, result.describe()  # CURLE_LOGIN_DENIED
    assert "< 535 5.7.8" in result.output
    assert gate.stored(rcpt) == []
