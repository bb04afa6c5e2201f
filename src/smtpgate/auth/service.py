"""The auth service: runs SASL mechanisms against the store and the policy.

Theory of operation
-------------------
One ``AuthService`` per server holds the store, the throttle, the verified-
credentials cache and the key for unknown users' fake secrets (read from the
store on first use: one key for every worker and restart). Each
connection opens a ``Conversation``, which drives one AUTH exchange at a time
and counts the connection's failures. The connection feeds it what the
session reported (``start``, ``respond``, ``abort``) and gets back a ``Turn``:
a challenge to send as 334, or a final reply (and the user on success).
``begin`` and ``answer`` are the same two calls for a host that can take a
``Turn`` at once: a challenge, or a warm login (the store keeps the account
in memory, ``CredentialStore.kept``, and the cache verified its password,
with no check failing and no transition due) comes back as a ``Turn`` with no
task and no turn of the event loop; anything else as the awaitable of the
full path, which makes every check again and owns every failure.

Mechanisms are synchronous and pure (``smtpgate.sasl``); this module performs
their effects: looking accounts up (``NeedSecret``), verifying passwords in a
worker thread (``VerifyPassword``), and then the policy checks that apply
only once credentials are proven: authorization identity, the account's
allowed mechanisms (534), and the password transition.

Password transition (README, "The password transition"): an account that lacks the secret a
mechanism needs answers 432 4.7.12. A successful PLAIN/LOGIN over TLS derives
the missing SCRAM/CRAM-MD5 secrets from the proven password and rehashes
legacy hashes to Argon2id, in one store transaction, so the next SCRAM works.

Every counted failure (see ``outcomes.COUNTED_FAILURES``) is answered only
after ``failure_delay`` (plus the per-login slow-down), and the
``max_failures_per_connection``-th is answered 421 4.7.0 and closes.
Unknown users walk the same path as wrong passwords: a dummy Argon2id verify
for password mechanisms, a fake but stable SCRAM secret for SCRAM.

Password hashing is shared fairly between client addresses and bounded
(``auth.fair``); a verify that finds no room is answered 454 4.7.0 (BUSY)
after ``failure_delay``, and not counted. A password verified recently is
served from the cache without hashing, so known-good logins skip the queue.

Device accounts (``credentials/devices.py``): a login that is disabled,
expired or from outside the account's networks fails exactly like a wrong
password -- 535 5.7.8, counted, delayed, after a real verify that bypasses
the cache (a wrong password is never in it either). The store is asked for
the account at every AUTH (SQLite answers from the accounts it read while its
file is unchanged: ``credentials/sqlite.py``), so ``device disable``,
``revoke`` and ``rotate`` take effect at the next one, in every worker. A
success hands the account to the connection (``Turn.account``) for the MAIL
FROM checks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from smtpgate.auth.cache import VerifiedCache
from smtpgate.auth.fair import FairHasher, HashingBusy
from smtpgate.auth.outcomes import COUNTED_FAILURES, REPLIES, Outcome
from smtpgate.auth.values import AuthEvent, AuthSettings, Peer, Turn
from smtpgate.credentials.base import (
    Account,
    CredentialStore,
    SecretsUpdate,
    StaleAccount,
    StoreUnavailable,
    UnknownUser,
)
from smtpgate.credentials.devices import login_refusal
from smtpgate.credentials.passwords import (
    DEFAULT_SCRAM_ITERATIONS,
    needs_rehash,
    secrets_from_password,
    verify_account_password,
    verify_dummy,
)
from smtpgate.ops import logs, metrics
from smtpgate.policy.mechanisms import Gate, gate, mechanism_allowed, usable_mechanisms
from smtpgate.policy.throttle import Throttle, client_key
from smtpgate.protocol import replies as r
from smtpgate.protocol.events import AuthAbort
from smtpgate.sasl import base as sasl
from smtpgate.sasl.cram_md5 import fake_cram_md5_secret
from smtpgate.sasl.registry import CHANNEL_BOUND_MECHANISMS, REGISTRY
from smtpgate.sasl.scram_secrets import fake_scram_secret

__all__ = ["AuthService", "AuthSettings", "Conversation", "Peer", "Turn"]

log = logging.getLogger("smtpgate.auth")
T = TypeVar("T")

_ABORTS = {
    AuthAbort.CANCELLED: Outcome.CANCELLED,
    AuthAbort.BAD_BASE64: Outcome.BAD_BASE64,
    AuthAbort.TOO_LONG: Outcome.TOO_LONG,
}
_FAILURES = {
    sasl.FailureKind.INVALID: Outcome.INVALID,
    sasl.FailureKind.MALFORMED: Outcome.MALFORMED,
}


class AuthService:
    def __init__(
        self,
        store: CredentialStore,
        settings: AuthSettings,
        throttle: Throttle,
        *,
        cache: VerifiedCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hasher: FairHasher | None = None,
        on_event: Callable[[AuthEvent], None] | None = None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.store = store
        self.settings = settings
        self.rules = settings.rules
        # The EHLO AUTH list without and with TLS: asked twice per connection.
        self._advertised = {tls: usable_mechanisms(self.rules, tls_active=tls)
                            for tls in (False, True)}
        self.throttle = throttle
        self.cache = cache if cache is not None else VerifiedCache()
        self.sleep = sleep
        self.on_event = on_event  # told every finished AUTH (the admin page's event log)
        self.today = today  # the UTC date, for device expiry
        self._fake_key: bytes | None = None  # from the store, on first use
        # Argon2id takes 64 MiB and a core per verify: one thread per core.
        self.hasher = hasher if hasher is not None else FairHasher(os.cpu_count() or 1)
        self._inflight: dict[tuple[tuple[str, bytes], str], asyncio.Future[bool]] = {}

    async def hashing(self, ip: str, login: str | None, fn: Callable[..., T], *args: Any) -> T:
        """Run a password hash or verify in ``ip``'s turn (``auth.fair``); HashingBusy if full."""
        suspect = self.throttle.suspect(ip, login)
        return await self.hasher.run(client_key(ip), suspect, fn, *args)

    async def verify_password(self, account: Account, password: str, ip: str) -> bool:
        """Verify through the cache; identical checks already running are shared.

        Without the sharing, a device that opens 20 connections at once with the
        same credentials would cost 20 Argon2 verifies instead of one.
        """
        stored = account.password_hash
        check = functools.partial(self.hashing, ip, account.name, verify_account_password)
        if stored is None:  # only SCRAM/CRAM secrets: nothing to cache against
            return await check(account, password)
        if self.cache.hit(account.name, password, stored):
            return True
        key = (self.cache.fingerprint(account.name, password), stored)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(check(account, password))
            self._inflight[key] = task

            def settle(done: asyncio.Future[bool]) -> None:
                del self._inflight[key]
                if not done.cancelled() and done.exception() is None and done.result():
                    self.cache.remember(account.name, password, stored)

            task.add_done_callback(settle)
        return await asyncio.shield(task)

    def close(self) -> None:
        self.hasher.close()

    def advertised(self, tls_active: bool) -> tuple[str, ...]:
        return self._advertised[tls_active]

    def conversation(self, peer: Peer) -> Conversation:
        return Conversation(self, peer)

    async def fake_secret(self, scheme: sasl.SecretScheme, name: str) -> sasl.Secret:
        """A stable secret for an unknown ``name``; StoreUnavailable if the key can't be read."""
        if self._fake_key is None:
            self._fake_key = await self.store.fake_secret_key()
        if scheme is sasl.SecretScheme.CRAM_MD5:
            return fake_cram_md5_secret(name, self._fake_key)
        # Same iteration count as real accounts, or "i=" would tell them apart.
        return fake_scram_secret(scheme, name, self._fake_key, DEFAULT_SCRAM_ITERATIONS)


class Conversation:
    """The AUTH exchanges of one connection."""

    def __init__(self, service: AuthService, peer: Peer) -> None:
        self.service = service
        self.peer = peer
        self.failures = 0
        self._mech: sasl.Mechanism | None = None
        self._mech_name = ""
        self._account: Account | None = None
        self._login: str | None = None  # the login being tried, for the per-login window
        self._success: sasl.Success | None = None  # SCRAM: waiting for the empty response
        self._step_started = 0.0  # when the client's current line arrived, for the metrics

    # -- what the connection calls ------------------------------------------
    def begin(
        self, mechanism: str, initial: bytes | None, problem: AuthAbort | None
    ) -> Turn | Awaitable[Turn]:
        """``start``, answered at once when nothing in it waits: a warm login (``_warm``)
        is a ``Turn`` here, with no task and no turn of the event loop; anything else is
        the awaitable that finishes it."""
        opened = self._open(mechanism, initial, problem)
        if isinstance(opened, Outcome):
            return self._finish(opened)
        return self._at_once(opened)

    async def start(self, mechanism: str, initial: bytes | None, problem: AuthAbort | None) -> Turn:
        turn = self.begin(mechanism, initial, problem)
        return turn if isinstance(turn, Turn) else await turn

    def _open(
        self, mechanism: str, initial: bytes | None, problem: AuthAbort | None
    ) -> Outcome | sasl.Step:
        """The checks before a mechanism runs, then its first step (or why not)."""
        self._reset(mechanism)
        self._step_started = time.perf_counter()
        svc = self.service
        if svc.throttle.ip_blocked(self.peer.ip):
            return Outcome.BLOCKED
        opened = gate(svc.rules, mechanism, tls_active=self.peer.tls_active)
        if opened is Gate.UNKNOWN:
            return Outcome.UNKNOWN_MECHANISM
        if opened is Gate.NEEDS_TLS:
            return Outcome.ENCRYPTION_REQUIRED
        if problem is not None:
            return _ABORTS[problem]
        mech = REGISTRY[self._mech_name](self._context())  # upper-cased by _reset
        if mech.server_first and initial is not None:
            return Outcome.UNEXPECTED_INITIAL
        self._mech = mech
        return mech.start(initial)

    def answer(self, data: bytes) -> Turn | Awaitable[Turn]:
        """``respond``, answered at once when nothing in it waits (see ``begin``)."""
        self._step_started = time.perf_counter()
        if self._success is not None:  # RFC 4422 section 5: empty answer to server-final
            success, self._success = self._success, None
            if data:
                return self._finish(Outcome.MALFORMED)
            return self._succeed(success.authcid, success.authzid, self._account)
        if self._mech is None:
            return self._finish(Outcome.MALFORMED)
        return self._at_once(self._mech.step(data))

    async def respond(self, data: bytes) -> Turn:
        turn = self.answer(data)
        return turn if isinstance(turn, Turn) else await turn

    async def abort(self, reason: AuthAbort) -> Turn:
        self._step_started = time.perf_counter()
        return await self._finish(_ABORTS[reason])

    # -- driving the mechanism ----------------------------------------------
    def _at_once(self, step: sasl.Step) -> Turn | Awaitable[Turn]:
        """A challenge or a warm login as a ``Turn`` now; any other step is driven."""
        if isinstance(step, sasl.Challenge):
            return Turn(challenge=step.data)
        if isinstance(step, sasl.VerifyPassword):
            turn = self._warm(step)
            if turn is not None:
                return turn
        return self._drive(step)

    async def _drive(self, step: sasl.Step) -> Turn:
        while True:
            if isinstance(step, sasl.Challenge):
                return Turn(challenge=step.data)
            if isinstance(step, sasl.Failure):
                return await self._finish(_FAILURES[step.kind])
            if isinstance(step, sasl.VerifyPassword):
                return await self._verify_password(step)
            if isinstance(step, sasl.Success):
                return await self._mechanism_success(step)
            outcome_or_secret = await self._lookup_secret(step)
            if isinstance(outcome_or_secret, Outcome):
                return await self._finish(outcome_or_secret)
            assert self._mech is not None
            step = self._mech.resume(outcome_or_secret)

    async def _lookup_secret(self, need: sasl.NeedSecret) -> Outcome | sasl.Secret:
        self._login = need.authcid
        if self.service.throttle.login_blocked(need.authcid, self.peer.ip):
            return Outcome.BLOCKED
        try:
            account = await self.service.store.get(need.authcid)
            if account is None:
                return await self.service.fake_secret(need.scheme, need.authcid)
        except StoreUnavailable:
            return Outcome.STORE_UNAVAILABLE
        self._account = account
        secret = account.secret_for(need.scheme)
        return Outcome.TRANSITION_NEEDED if secret is None else secret

    def _warm(self, step: sasl.VerifyPassword) -> Turn | None:
        """The success ``_verify_password`` would reach, without waiting: the store still
        holds the account in memory (``CredentialStore.kept``), its password was verified
        recently (the cache), and no check fails and no transition is due. None otherwise:
        the caller takes the full path, which makes every check again and owns every
        failure, its log line and its delay. A warm PLAIN login, the steady state of a
        device or an application, then costs no task and no turn of the event loop."""
        svc = self.service
        if not step.authcid or svc.throttle.login_blocked(step.authcid, self.peer.ip):
            return None
        account = svc.store.kept(step.authcid)
        if account is None or account.password_hash is None:
            return None
        if login_refusal(account, self.peer.ip, svc.today()) is not None:
            return None
        if not svc.cache.hit(account.name, step.password, account.password_hash):
            return None
        if self._authorize(account, step.authzid) is not Outcome.OK:
            return None
        if self.peer.tls_active and self._transition_due(account):
            return None
        self._login, self._account = step.authcid, account
        return self._succeed(step.authcid, step.authzid, account)

    async def _verify_password(self, step: sasl.VerifyPassword) -> Turn:
        svc = self.service
        self._login = step.authcid
        if svc.throttle.login_blocked(step.authcid, self.peer.ip):
            return await self._finish(Outcome.BLOCKED)
        try:
            account = await svc.store.get(step.authcid) if step.authcid else None
        except StoreUnavailable:
            return await self._finish(Outcome.STORE_UNAVAILABLE)
        self._account = account
        try:
            if account is not None and self._refused(account):
                # The same work as a wrong password: a real verify, never the cache.
                await svc.hashing(self.peer.ip, account.name, verify_account_password,
                                  account, step.password)
                return await self._finish(Outcome.INVALID)
            if not await self._password_ok(account, step.authcid, step.password):
                return await self._finish(Outcome.INVALID)
        except HashingBusy:
            return await self._finish(Outcome.BUSY)
        assert account is not None
        outcome = self._authorize(account, step.authzid)
        if outcome is Outcome.OK and self.peer.tls_active:
            await self._transition(account, step.password)
        if outcome is not Outcome.OK:
            return await self._finish(outcome)
        return self._succeed(step.authcid, step.authzid, account)

    async def _password_ok(self, account: Account | None, login: str, password: str) -> bool:
        ip = self.peer.ip
        if account is None:
            await self.service.hashing(ip, login, verify_dummy, password)
            return False
        return await self.service.verify_password(account, password, ip)

    async def _mechanism_success(self, step: sasl.Success) -> Turn:
        account = self._account
        if account is None:  # a fake secret can never verify; be safe anyway
            return await self._finish(Outcome.INVALID)
        outcome = self._authorize(account, step.authzid)
        if outcome is not Outcome.OK:
            return await self._finish(outcome)
        if step.additional is not None:
            self._success = step
            return Turn(challenge=step.additional)
        return self._succeed(step.authcid, step.authzid, account)

    def _refused(self, account: Account) -> bool:
        """A disabled or expired account, or a login from outside its networks."""
        reason = login_refusal(account, self.peer.ip, self.service.today())
        if reason is not None:
            log.info("session=%s login refused for %s: %s", self.peer.session_id, account.name,
                     reason)
        return reason is not None

    def _authorize(self, account: Account, authzid: str) -> Outcome:
        """Checks made only once the credentials are proven (RFC 4954 section 6)."""
        if self._refused(account):  # SCRAM and CRAM-MD5 reach this with a valid proof
            return Outcome.INVALID
        if authzid and authzid != account.name and authzid not in account.may_act_as:
            return Outcome.INVALID
        if not mechanism_allowed(self._mech_name, account.allowed_mechanisms):
            return Outcome.WEAK_FOR_ACCOUNT
        return Outcome.OK

    def _transition_due(self, account: Account) -> bool:
        """The account lacks a secret this server offers, or its hash is of an old kind."""
        cram = self.service.settings.cram_md5_enabled
        missing = (
            account.scram_sha1 is None
            or account.scram_sha256 is None
            or (cram and account.cram_md5 is None)
        )
        return missing or account.password_hash is None or needs_rehash(account.password_hash)

    async def _transition(self, account: Account, password: str) -> None:
        """Store what this proven password can give and the account lacks."""
        if not self._transition_due(account):
            return
        cram = self.service.settings.cram_md5_enabled
        rehash = account.password_hash is None or needs_rehash(account.password_hash)
        try:
            fresh = await self.service.hashing(
                self.peer.ip, account.name,
                functools.partial(secrets_from_password, cram_md5=cram), password,
            )
            update = SecretsUpdate(
                password_hash=fresh.password_hash if rehash else None,
                scram_sha1=fresh.scram_sha1 if account.scram_sha1 is None else None,
                scram_sha256=fresh.scram_sha256 if account.scram_sha256 is None else None,
                cram_md5=fresh.cram_md5 if cram and account.cram_md5 is None else None,
            )
            await self.service.store.update_secrets(
                account.name, update, if_hash=account.password_hash
            )
        except (StoreUnavailable, UnknownUser, StaleAccount, ValueError, HashingBusy) as exc:
            log.warning("password transition for an account failed: %s", type(exc).__name__)
            return
        log.info("password transition: stored new secrets for %s", account.name)

    # -- endings ------------------------------------------------------------
    def _succeed(self, authcid: str, authzid: str, account: Account | None) -> Turn:
        self.service.throttle.record_success(self.peer.ip, authcid)
        user = authzid or authcid
        self._tell(Outcome.OK, authcid)
        log.info(
            "session=%s auth ok mechanism=%s user=%s", self.peer.session_id, self._mech_name, user
        )
        self._measure(r.AUTH_SUCCEEDED.code)
        self._mech = None
        return Turn(reply=r.AUTH_SUCCEEDED, user=user, account=account)

    async def _finish(self, outcome: Outcome) -> Turn:
        """A final non-success reply; counted failures are delayed and may close."""
        self._mech = None
        self._success = None
        svc = self.service
        self._tell(outcome, self._login or "")
        counted = outcome in COUNTED_FAILURES
        reply = REPLIES[outcome]
        if counted:
            self.failures += 1
            svc.throttle.record_failure(self.peer.ip, self._login)
            if self.failures >= svc.settings.max_failures_per_connection:
                reply = r.TOO_MANY_AUTH_FAILURES
        # Logged before the delay: a client that hangs up while waiting is still seen.
        self._log_failure(outcome, reply.code)
        delay = 0.0
        if outcome is Outcome.BUSY:
            delay = svc.settings.failure_delay  # no busy loop of instant refusals
        elif counted:
            delay = svc.settings.failure_delay
            if self._login:
                delay += svc.throttle.extra_delay(self._login, self.peer.ip)
        if delay > 0:
            await svc.sleep(delay)
        return Turn(reply=reply)

    def _log_failure(self, outcome: Outcome, code: int) -> None:
        mechanism = self._mech_name if self._mech_name in metrics.KNOWN_MECHANISMS else "other"
        logs.auth_failure(
            session=self.peer.session_id, listener=self.peer.listener, ip=self.peer.ip,
            mechanism=mechanism if self._mech_name else "-", reply=code, outcome=outcome.value,
            login=self._login, known=self._account is not None,
        )
        if outcome is Outcome.BLOCKED:
            metrics.get().blocked("login" if self._login else "ip")
        self._measure(code)

    def _measure(self, code: int) -> None:
        seconds = time.perf_counter() - self._step_started
        metrics.get().auth(self._mech_name, code, seconds)

    def _tell(self, outcome: Outcome, login: str) -> None:
        if self.service.on_event is not None:
            self.service.on_event(AuthEvent(self.peer.ip, login, self._mech_name, outcome.value))

    def _reset(self, mechanism: str) -> None:
        self._mech = None
        self._mech_name = mechanism.upper()
        self._account = None
        self._login = None
        self._success = None

    def _context(self) -> sasl.MechanismContext:
        return sasl.MechanismContext(
            hostname=self.service.settings.hostname,
            timestamp=lambda: int(time.time()),
            bindings=self.peer.bindings,
            plus_advertised=any(
                m in CHANNEL_BOUND_MECHANISMS for m in self.service.advertised(self.peer.tls_active)
            ),
        )
