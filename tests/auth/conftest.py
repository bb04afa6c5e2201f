"""Fixtures for AuthService/Conversation tests: a real SqliteStore, no real sleeping.

``make`` builds an ``AuthService`` on a store (the SQLite one by default, with
user alice), an injected ``sleep`` that only records delays, and a Throttle
with a hand-driven clock. The helpers drive whole exchanges (PLAIN, LOGIN,
SCRAM with the test-only client of tests/sasl/clients.py, CRAM-MD5).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smtpgate.auth.fair import FairHasher
from smtpgate.auth.service import AuthService, Conversation, Peer, Turn
from smtpgate.credentials.base import Account, CredentialStore, SecretsUpdate, StoreUnavailable
from smtpgate.credentials.passwords import secrets_from_password
from smtpgate.credentials.sqlite import SqliteStore
from smtpgate.policy.throttle import Throttle
from tests.auth.defaults import auth_settings, throttle_limits
from tests.sasl.clients import ScramClient, cram_md5_response, plain_message

PASSWORD = "correct horse battery staple"
ALL_MECHANISMS = (
    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN", "LOGIN",
)
TLS_PEER = Peer("192.0.2.10", tls_active=True)
PLAIN_PEER = Peer("192.0.2.10", tls_active=False)


class Sleeps:
    """An injected ``sleep`` that records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """Wraps a store and counts ``get`` and ``kept`` calls (proves "without checking
    credentials")."""

    def __init__(self, inner: CredentialStore) -> None:
        self.inner = inner
        self.gets = 0
        self.peeks = 0  # kept(): the warm path's look at what the store holds in memory
        self.updates = 0

    async def get(self, name: str) -> Account | None:
        self.gets += 1
        return await self.inner.get(name)

    def kept(self, name: str) -> Account | None:
        self.peeks += 1
        return self.inner.kept(name)

    async def update_secrets(self, name: str, update: SecretsUpdate, **kwargs: Any) -> None:
        self.updates += 1
        await self.inner.update_secrets(name, update, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FailingStore:
    """A store that cannot be reached: every call raises StoreUnavailable."""

    def __init__(self) -> None:
        self.gets = 0

    async def get(self, name: str) -> Account | None:
        self.gets += 1
        raise StoreUnavailable("database is locked")

    def kept(self, name: str) -> Account | None:
        return None

    async def update_secrets(self, name: str, update: SecretsUpdate, **kwargs: Any) -> None:
        raise StoreUnavailable("database is locked")

    async def fake_secret_key(self) -> bytes:
        raise StoreUnavailable("database is locked")


class MemoryStore:
    """A tiny in-memory CredentialStore (only what the auth service uses)."""

    def __init__(self, accounts: Sequence[Account] = ()) -> None:
        self.accounts = {a.name: a for a in accounts}

    async def get(self, name: str) -> Account | None:
        return self.accounts.get(name)

    def kept(self, name: str) -> Account | None:
        return self.accounts.get(name)  # memory: always current

    async def update_secrets(self, name: str, update: SecretsUpdate, **kwargs: Any) -> None:
        raise StoreUnavailable("read-only")

    async def fake_secret_key(self) -> bytes:
        return b"\x42" * 32


@functools.cache
def _secrets(password: str, cram_md5: bool) -> SecretsUpdate:
    return secrets_from_password(password, cram_md5=cram_md5)


def account(
    name: str, password: str = PASSWORD, *, cram_md5: bool = False,
    allow: tuple[str, ...] | None = None, may_act_as: tuple[str, ...] = (),
) -> Account:
    """What ``user add`` stores (Argon2id, SCRAM secrets, CRAM-MD5 if asked), hashed once
    per password for the whole run: Argon2id is the slow part of these tests."""
    fresh = _secrets(password, cram_md5)
    return Account(
        name=name, password_hash=fresh.password_hash, scram_sha1=fresh.scram_sha1,
        scram_sha256=fresh.scram_sha256, cram_md5=fresh.cram_md5,
        allowed_mechanisms=None if allow is None else frozenset(allow),
        may_act_as=frozenset(may_act_as),
    )


async def add_account(store: CredentialStore, name: str, password: str = PASSWORD,
                      **kwargs: Any) -> None:
    await store.add(account(name, password, **kwargs))


@dataclass
class Rig:
    service: AuthService
    store: CountingStore
    sleeps: Sleeps
    clock: Clock
    throttle: Throttle
    sqlite: SqliteStore
    extra: dict[str, Any] = field(default_factory=dict)

    def conversation(self, peer: Peer = TLS_PEER) -> Conversation:
        return self.service.conversation(peer)

    def ip_failures(self, key: str) -> int:
        return self.throttle.state.count("ip", key, float("-inf"))

    def login_failures(self, login: str) -> int:
        return self.throttle.state.count("login", login, float("-inf"))


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[MakeRig]:
    """``await make(mechanisms=..., failure_delay=..., ip_failure_limit=..., ...)`` -> Rig."""
    stores: list[SqliteStore] = []

    async def build(
        *,
        mechanisms: tuple[str, ...] = ALL_MECHANISMS,
        plaintext_requires_tls: bool = True,
        failure_delay: float = 2.0,
        max_failures_per_connection: int = 3,
        ip_failure_limit: int = 10,
        ip_failure_window: float = 300,
        user_failure_limit: int = 20,
        user_failure_window: float = 900,
        alice: bool = True,
        store: CredentialStore | None = None,
        hasher: FairHasher | None = None,
    ) -> Rig:
        sqlite = SqliteStore(tmp_path / f"users{len(stores)}.db")
        stores.append(sqlite)
        if alice:
            await add_account(sqlite, "alice", cram_md5="CRAM-MD5" in mechanisms)
        counting = CountingStore(store if store is not None else sqlite)
        clock = Clock()
        throttle = Throttle(
            throttle_limits(
                ip_failure_limit=ip_failure_limit, ip_failure_window=ip_failure_window,
                user_failure_limit=user_failure_limit, user_failure_window=user_failure_window,
            ),
            clock=clock,
        )
        sleeps = Sleeps()
        settings = auth_settings(
            mechanisms=mechanisms,
            plaintext_requires_tls=plaintext_requires_tls,
            failure_delay=failure_delay,
            max_failures_per_connection=max_failures_per_connection,
        )
        service = AuthService(counting, settings, throttle, sleep=sleeps, hasher=hasher)
        return Rig(service, counting, sleeps, clock, throttle, sqlite)

    yield build
    for store in stores:
        await store.close()


def code(turn: Turn) -> str:
    """``"535 5.7.8"``: the fixed part of a final reply."""
    assert turn.reply is not None, f"expected a final reply, got challenge {turn.challenge!r}"
    return f"{turn.reply.code} {turn.reply.enhanced}"


async def plain(conv: Conversation, user: str = "alice", password: str = PASSWORD,
                authzid: str = "") -> Turn:
    return await conv.start("PLAIN", plain_message(user, password, authzid), None)


async def login(conv: Conversation, user: str = "alice", password: str = PASSWORD) -> Turn:
    turn = await conv.start("LOGIN", None, None)
    assert turn.challenge == b"Username:"
    turn = await conv.respond(user.encode())
    assert turn.challenge == b"Password:"
    return await conv.respond(password.encode())


async def scram(
    conv: Conversation, mechanism: str = "SCRAM-SHA-256", user: str = "alice",
    password: str = PASSWORD, authzid: str = "", **client_args: Any,
) -> tuple[Turn, ScramClient, bytes | None]:
    """Run SCRAM to its end (answering the server-final with an empty response).

    Returns the final turn, the client, and the server-first message (None if
    the exchange ended before it).
    """
    client = ScramClient(mechanism, user, password, authzid=authzid, **client_args)
    turn = await conv.start(mechanism, client.client_first(), None)
    if turn.challenge is None:
        return turn, client, None
    server_first = turn.challenge
    turn = await conv.respond(client.client_final(server_first))
    if turn.challenge is None:
        return turn, client, server_first
    assert client.verify_server_final(turn.challenge), "server signature does not verify"
    return await conv.respond(b""), client, server_first


async def cram_md5(conv: Conversation, user: str = "alice", password: str = PASSWORD) -> Turn:
    turn = await conv.start("CRAM-MD5", None, None)
    assert turn.challenge is not None and turn.challenge.startswith(b"<")
    return await conv.respond(cram_md5_response(user, password, turn.challenge))


def salt_of(server_first: bytes) -> bytes:
    attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
    return base64.b64decode(attrs["s"])


def iterations_of(server_first: bytes) -> int:
    attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
    return int(attrs["i"])
