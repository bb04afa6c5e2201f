"""The password transition (SPEC section 4), end to end with real clients.

An account imported from a Dovecot passwd-file holds only a legacy password
hash (``{BLF-CRYPT}`` bcrypt or ``{SHA512-CRYPT}``), nothing SCRAM or CRAM-MD5
could use. So:

1. gsasl SCRAM-SHA-256, SCRAM-SHA-256-PLUS and CRAM-MD5 get ``432 4.7.12``;
2. a PLAIN login with the wrong password fails (535) and changes nothing;
3. a real PLAIN login over STARTTLS (swaks or curl) succeeds and submits mail;
4. the store now holds an Argon2id hash and SCRAM-SHA-1/-256 and CRAM-MD5
   secrets, so gsasl SCRAM-SHA-256 (with and without channel binding),
   SCRAM-SHA-1 and CRAM-MD5 all succeed, and PLAIN still works.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from passlib.hash import sha512_crypt

from smtpgate.credentials.sqlite import open_store
from smtpgate.credentials.users import import_passwd_file
from tests.interop.clients import curl, gsasl, swaks_send
from tests.interop.conftest import PASSWORD, Gate, ToolResult, received_with


def legacy_hash(scheme: str) -> str:
    if scheme == "BLF-CRYPT":  # cost 4: the cheapest bcrypt, this is a test
        return "{BLF-CRYPT}" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    return "{SHA512-CRYPT}" + str(sha512_crypt.using(rounds=5000).hash(PASSWORD))


async def import_users(gate: Gate, lines: list[str]) -> None:
    passwd = gate.workdir / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    store = open_store(gate.config.store.url, gate.config.data_dir)
    try:
        limits = dataclasses.asdict(gate.config.import_)
        assert await import_passwd_file(store, passwd, limits=limits) == len(lines)
    finally:
        await store.close()


async def plaintext_login(client: str, gate: Gate, user: str, rcpt: str,
                          password: str = PASSWORD) -> ToolResult:
    if client == "swaks":
        return await swaks_send(gate, rcpt, "PLAIN", user=user, password=password)
    return await curl(gate, rcpt, "PLAIN", user=user, password=password)


def assert_transition_needed(result: ToolResult) -> None:
    assert result.returncode != 0
    assert "432 4.7.12" in result.output, result.describe()


def assert_authenticated(result: ToolResult) -> None:
    assert result.returncode == 0, result.describe()
    assert "235 2.7.0" in result.output, result.describe()


@pytest.mark.parametrize(
    ("scheme", "client"), [("BLF-CRYPT", "swaks"), ("SHA512-CRYPT", "curl")]
)
async def test_password_transition(start_gate: Any, tmp_path: Path,
                                   scheme: str, client: str) -> None:
    gate: Gate = await start_gate(user=False)
    user = "carol"
    # Extra colon fields (uid, gid, home, ...) as Dovecot writes them are ignored.
    await import_users(gate, [f"{user}:{legacy_hash(scheme)}:1000:1000::/home/{user}::"])
    before = await gate.account(user)
    assert before is not None and before.password_hash is not None
    assert before.password_hash.startswith("{" + scheme + "}")
    assert before.scram_sha256 is None and before.scram_sha1 is None and before.cram_md5 is None

    # 1. Nothing but the password hash: SCRAM and CRAM-MD5 need the transition.
    assert_transition_needed(await gsasl(gate, "SCRAM-SHA-256", user=user, channel_binding=False))
    assert_transition_needed(await gsasl(gate, "SCRAM-SHA-256-PLUS", user=user))
    assert_transition_needed(await gsasl(gate, "CRAM-MD5", user=user, channel_binding=False))

    # 2. A failed plaintext login teaches the server nothing.
    wrong = await plaintext_login(client, gate, user, "nobody@example.org", "not the password")
    assert wrong.returncode != 0 and "535 5.7.8" in wrong.output, wrong.describe()
    assert await gate.account(user) == before

    # 3. One successful PLAIN over TLS with a real client, mail delivered.
    rcpt = f"transition-{client}@example.org"
    login = await plaintext_login(client, gate, user, rcpt)
    assert login.returncode == 0, login.describe()
    assert received_with(gate.only_message(rcpt)) == "ESMTPSA"

    # 4. Secrets derived and stored, legacy hash replaced by Argon2id.
    after = await gate.account(user)
    assert after is not None and after.password_hash is not None
    assert after.password_hash.startswith("{ARGON2ID}$argon2id$v=19$")
    assert after.scram_sha256 is not None and after.scram_sha1 is not None
    assert after.cram_md5 is not None  # CRAM-MD5 is enabled in these tests' config

    assert_authenticated(await gsasl(gate, "SCRAM-SHA-256", user=user, channel_binding=False))
    assert_authenticated(await gsasl(gate, "SCRAM-SHA-256-PLUS", user=user))
    assert_authenticated(await gsasl(gate, "SCRAM-SHA-1", user=user, channel_binding=False))
    assert_authenticated(await gsasl(gate, "CRAM-MD5", user=user, channel_binding=False))
    again = await plaintext_login(client, gate, user, rcpt)  # the new hash verifies too
    assert again.returncode == 0, again.describe()
    assert len(gate.stored(rcpt)) == 2


async def test_transition_without_cram_md5_enabled(start_gate: Any) -> None:
    """With CRAM-MD5 off (the default list) the transition stores no CRAM-MD5 secret."""
    gate: Gate = await start_gate(
        user=False,
        auth={"mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"]},
    )
    await import_users(gate, [f"dave:{legacy_hash('SHA512-CRYPT')}"])
    assert_transition_needed(await gsasl(gate, "SCRAM-SHA-256", user="dave",
                                         channel_binding=False))
    rcpt = "transition-login@example.org"
    login = await curl(gate, rcpt, "LOGIN", user="dave")
    assert login.returncode == 0, login.describe()
    after = await gate.account("dave")
    assert after is not None and after.password_hash is not None
    assert after.password_hash.startswith("{ARGON2ID}")
    assert after.scram_sha256 is not None and after.cram_md5 is None
    assert_authenticated(await gsasl(gate, "SCRAM-SHA-256-PLUS", user="dave"))
