"""GNU SASL's command-line client in SMTP mode: SCRAM with and without channel binding.

gsasl (libgsasl + GnuTLS) is an independent SCRAM implementation, and the only
client here that speaks -PLUS. It sends STARTTLS before EHLO, which the server
accepts (SPEC section 4). With TLS 1.3 it binds with ``tls-exporter`` (RFC 9266);
forced down to TLS 1.2 with a GnuTLS priority string it binds with
``tls-unique`` (RFC 5929). The binding type is read from the client-first
message in gsasl's verbose transcript (``p=<cb-name>``), the TLS version from
its ``TLS session info`` line, and the server's own view from its log.

Non-PLUS SCRAM over TLS runs with ``--no-cb``: gsasl 2.2.0 otherwise fails
locally ("mechanism error") right after the server's empty ``334`` challenge,
before it sends a single byte of the exchange.

gsasl sends no mail; it only authenticates and QUITs.
"""

from __future__ import annotations

import logging

import pytest

from tests.interop.clients import TLS12, TLS13, gsasl
from tests.interop.clients import scram_client_first as client_first
from tests.interop.conftest import Gate, ToolResult


def assert_authenticated(result: ToolResult) -> None:
    assert result.returncode == 0, result.describe()
    assert "235 2.7.0" in result.output, result.describe()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_over_starttls(gate: Gate, mechanism: str) -> None:
    result = await gsasl(gate, mechanism, channel_binding=False)
    assert_authenticated(result)
    assert f"AUTH {mechanism}\n" in result.output
    assert client_first(result).startswith("n,,n=alice,r=")  # no binding asked for


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_without_tls(gate: Gate, mechanism: str) -> None:
    result = await gsasl(gate, mechanism, tls=False)
    assert_authenticated(result)
    assert "250 AUTH SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5\n" in result.output  # no -PLUS, PLAIN
    assert client_first(result).startswith("n,,n=alice,r=")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize(
    "tls",
    [(TLS13, "TLS1.3", "tls-exporter"), (TLS12, "TLS1.2", "tls-unique")],
    ids=["tls1.3-exporter", "tls1.2-unique"],
)
async def test_scram_plus_channel_binding(
    gate: Gate, caplog: pytest.LogCaptureFixture, mechanism: str, tls: tuple[str, str, str],
) -> None:
    priority, version, binding = tls
    caplog.set_level(logging.INFO)
    result = await gsasl(gate, mechanism, priority=priority)
    assert_authenticated(result)
    assert f"TLS session info: ({version})" in result.output, result.describe()
    assert client_first(result).startswith(f"p={binding},,n=alice,r=")
    # The server saw the same TLS version (its log names it for each session).
    assert f"TLSv{version[3:]}" in caplog.text


async def test_scram_plus_default_priority_binds_on_tls13(gate: Gate) -> None:
    """Without a priority string gsasl and the server agree on TLS 1.3 and tls-exporter."""
    result = await gsasl(gate, "SCRAM-SHA-256-PLUS")
    assert_authenticated(result)
    assert "TLS session info: (TLS1.3)" in result.output
    assert client_first(result).startswith("p=tls-exporter,,")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"])
async def test_scram_wrong_password_is_535(gate: Gate, mechanism: str) -> None:
    result = await gsasl(gate, mechanism, password="not the password",
                         channel_binding=mechanism.endswith("-PLUS"))
    assert result.returncode != 0
    assert "535 5.7.8" in result.output, result.describe()
    assert "235 " not in result.output


async def test_scram_unknown_user_is_535(gate: Gate) -> None:
    result = await gsasl(gate, "SCRAM-SHA-256", user="mallory", channel_binding=False)
    assert result.returncode != 0
    assert "535 5.7.8" in result.output, result.describe()


async def test_cram_md5(gate: Gate) -> None:
    result = await gsasl(gate, "CRAM-MD5", channel_binding=False)
    assert_authenticated(result)
