"""Per-account policy seen through real clients: SASL authzid and --allow-mechanisms.

- An authorization identity (authzid) equal to the user name is always allowed;
  another one only if the account may act as it (``--may-act-as``), else 535 5.7.8.
  curl sends it in PLAIN (``--sasl-authzid``), gsasl in SCRAM's gs2 header (``-z``).
- An account restricted to some mechanisms gets 534 5.7.9 for any other one that
  otherwise succeeds (SPEC section 4).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import create_user
from tests.interop.clients import curl, gsasl, swaks_send
from tests.interop.conftest import PASSWORD, Gate, received_with, require_tool, run_tool

ROBOT_ACTS_AS = "bob@example.org"


@pytest.fixture
async def policy_gate(gate: Gate) -> Gate:
    await create_user(gate.config, "robot", may_act_as=[ROBOT_ACTS_AS])
    await create_user(gate.config, "scanner", allow_mechanisms=["SCRAM-SHA-256-PLUS"])
    return gate


@pytest.mark.parametrize(
    ("user", "authzid", "ok"),
    [("alice", "alice", True), ("alice", ROBOT_ACTS_AS, False), ("robot", ROBOT_ACTS_AS, True)],
)
async def test_curl_plain_authzid(policy_gate: Gate, user: str, authzid: str, ok: bool) -> None:
    gate = policy_gate
    rcpt = f"authzid-{user}-{ok}@example.org".lower()
    result = await curl(gate, rcpt, "PLAIN", "--sasl-authzid", authzid, user=user)
    if ok:
        assert result.returncode == 0, result.describe()
        assert received_with(gate.only_message(rcpt)) == "ESMTPSA"
    else:
        assert "< 535 5.7.8" in result.output, result.describe()
        assert gate.stored(rcpt) == []


@pytest.mark.parametrize(
    ("user", "authzid", "reply"),
    [("robot", ROBOT_ACTS_AS, "235 2.7.0"), ("alice", ROBOT_ACTS_AS, "535 5.7.8")],
)
async def test_gsasl_scram_authzid(policy_gate: Gate, user: str, authzid: str,
                                   reply: str) -> None:
    gate = policy_gate
    result = await run_tool([
        require_tool("gsasl"), "--smtp", "--verbose", "--mechanism", "SCRAM-SHA-256-PLUS",
        "--authentication-id", user, "--authorization-id", authzid, "--password", PASSWORD,
        f"--connect={gate.host}:{gate.starttls_port}", "--starttls",
        f"--x509-ca-file={gate.config.tls.cert}", f"--hostname={gate.config.hostname}",
    ])
    assert reply in result.output, result.describe()
    assert (result.returncode == 0) == reply.startswith("235")


async def test_allow_mechanisms(policy_gate: Gate) -> None:
    gate = policy_gate
    rcpt = "scanner@example.org"
    plain = await swaks_send(gate, rcpt, "PLAIN", user="scanner")
    assert "<~* 534 5.7.9" in plain.stdout, plain.describe()
    assert gate.stored(rcpt) == []
    scram = await gsasl(gate, "SCRAM-SHA-256", user="scanner", channel_binding=False)
    assert "534 5.7.9" in scram.output, scram.describe()
    plus = await gsasl(gate, "SCRAM-SHA-256-PLUS", user="scanner")
    assert plus.returncode == 0 and "235 2.7.0" in plus.output, plus.describe()
    # A wrong password is still 535: the policy is checked only after the credentials.
    wrong = await swaks_send(gate, rcpt, "PLAIN", user="scanner", password="not the password")
    assert "<~* 535 5.7.8" in wrong.stdout, wrong.describe()
