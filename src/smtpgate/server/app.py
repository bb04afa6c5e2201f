"""The embeddable server: listeners, connection limits, graceful shutdown.

    async with smtpgate.Server(config, delivery=DiscardTarget()) as server:
        host, port = server.addresses[0]
        ...

``Server`` wires the pieces: the credential store, the auth service with its
throttle, the delivery target, the TLS context (a self-signed pair is made on
first start when none is configured), the connection limits (shared through
Redis with ``[state] url``: ``smtpgate.state``) and one listening socket per
``[[listener]]``. Connections get a ``ConnectionContext``
(``server/context.py``), never the server. ``stop`` stops accepting, tells
idle clients 421 4.3.2, lets sessions in DATA or in a slow step finish
within ``SHUTDOWN_GRACE`` seconds, then closes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING

from smtpgate.auth.service import AuthService, AuthSettings
from smtpgate.config.schema import Config, ListenerConfig, TlsConfig
from smtpgate.credentials.base import CredentialStore
from smtpgate.credentials.open import open_store
from smtpgate.delivery.base import DeliveryTarget
from smtpgate.delivery.factory import make_target
from smtpgate.policy.throttle import MemoryThrottleState, Throttle, ThrottleLimits, ThrottleState
from smtpgate.server.admission import Admission, LocalAdmission
from smtpgate.server.connection import Connection
from smtpgate.server.context import ConnectionContext
from smtpgate.server.preflight import bind_listener, uses_tls
from smtpgate.server.quota_db import SqliteQuota
from smtpgate.server.senders import DailyQuota, QuotaUnavailable, SenderPolicy
from smtpgate.server.transaction import Deliveries

# Optional subsystems are imported where they are configured, never here: the admin page
# (aiohttp, Jinja2, prometheus-client), the relay (httpx, aiosmtplib), the shared state
# (redis) and TLS (pyOpenSSL, cryptography) each cost megabytes of resident memory in
# every worker that loads them (docs/performance.md, "Lean processes").
if TYPE_CHECKING:
    from OpenSSL import SSL

    from smtpgate.admin.events import EventLog
    from smtpgate.admin.listener import AdminListener
    from smtpgate.relay.service import Relay
    from smtpgate.state import SharedState

log = logging.getLogger("smtpgate.server")
SHUTDOWN_GRACE = 30.0  # seconds sessions in DATA or a slow step get to finish on stop


class Server:
    def __init__(
        self,
        config: Config,
        *,
        delivery: DeliveryTarget | None = None,
        store: CredentialStore | None = None,
        throttle_state: ThrottleState | None = None,
        reuse_port: bool = False,
        admission: Admission | None = None,
        serve_admin: bool = True,
        quota: DailyQuota | None = None,
        tls_at_start: bool = True,
    ) -> None:
        """``tls_at_start``: load the TLS pair in ``start`` (a bad pair fails there); False
        loads it with the first TLS connection, after the caller checked it (run.py)."""
        self.config = config
        self.tls_at_start = tls_at_start
        self.relay: Relay | None = None  # the queue's deliverer, in mode "relay"
        if delivery is None and config.delivery.mode == "relay":
            from smtpgate.relay.service import Relay

            self.relay = Relay(config)
            delivery = self.relay.target
        self.delivery = delivery if delivery is not None else make_target(config)
        # With [admin] address set, every worker logs AUTH outcomes and messages for the
        # admin page; ``serve_admin`` says whether this process also serves it (run.py).
        self.events: EventLog | None = None
        if config.admin.address:
            from smtpgate.admin.events import EventLog

            self.events = EventLog(config.data_dir / "admin-events.db")
        self._own_store = store is None
        self.store = store if store is not None else open_store(config.store.url, config.data_dir)
        lim = config.limits
        if admission is None:
            admission = LocalAdmission(lim.max_connections, lim.max_connections_per_ip)
        self.shared: SharedState | None = None  # [state] url: Redis around our own state
        if config.state.url:
            from smtpgate.state import open_shared_state

            local = throttle_state if throttle_state is not None else MemoryThrottleState()
            self.shared = open_shared_state(config, local, admission)
            throttle_state, admission = self.shared.throttle, self.shared.admission
        a = config.auth
        limits = ThrottleLimits(
            a.ip_failure_limit, a.ip_failure_window, a.user_failure_limit, a.user_failure_window
        )
        settings = AuthSettings(
            mechanisms=a.mechanisms,
            plaintext_requires_tls=a.plaintext_requires_tls,
            failure_delay=a.failure_delay,
            max_failures_per_connection=a.max_failures_per_connection,
            hostname=config.hostname,
        )
        # Wall time: a shared state compares times written by other processes.
        throttle = Throttle(limits, throttle_state, clock=time.time)
        on_event = None if self.events is None else self.events.auth  # the admin page's log
        self.auth = AuthService(self.store, settings, throttle, on_event=on_event)
        self.device_auth = self._device_auth(settings, throttle)
        self.reuse_port = reuse_port
        self.admission: Admission = admission
        # Device quotas: in <data_dir>/quota.db, shared by workers, opened on first use.
        self.quota = quota if quota is not None else SqliteQuota(config.data_dir / "quota.db")
        if self.shared is not None:  # counted in Redis across instances
            from smtpgate.state.quota import RedisQuota

            self.quota = RedisQuota(self.shared.link, self.quota, QuotaUnavailable)
        self.connections: set[Connection] = set()  # admitted and not yet lost
        self.addresses: list[tuple[str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._tls_contexts: dict[tuple[str, str], SSL.Context] = {}  # (min_tls, ciphers)
        self.admin = self._admin_listener() if serve_admin else None

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Load TLS and bind every listener; StartupError names a port that is taken."""
        if self.tls_at_start and uses_tls(self.config):
            for listener in self.config.listeners:
                if listener.tls != "none":
                    self.tls_context(listener)
        context = self.context()
        if self.shared is not None:
            self.shared.start()
        loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            _warn_if_weakened(listener)
            sock = bind_listener(listener, reuse_port=self.reuse_port)
            server = await loop.create_server(
                lambda lst=listener: Connection(context, lst, self.connections),  # type: ignore[misc]
                sock=sock,
            )
            self._servers.append(server)
            host, port = sock.getsockname()[:2]
            self.addresses.append((host, port))
            log.info("listening on %s tls=%s require_auth=%s", _fmt(host, port), listener.tls,
                     listener.require_auth)
        if self.admin is not None:
            await self.admin.start()
        if self.relay is not None:
            await self.relay.start()

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        if self.admin is not None:
            await self.admin.stop()
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.shutdown()
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        if self.relay is not None:
            await self.relay.stop()
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        self.auth.close()
        if self.events is not None:
            self.events.close()
        self.quota.close()
        if self._own_store:
            await self.store.close()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- what connections see ------------------------------------------------
    def context(self) -> ConnectionContext:
        cfg = self.config
        return ConnectionContext(
            hostname=cfg.hostname,
            limits=cfg.limits,
            auth=self.auth,
            deliveries=Deliveries(
                self.delivery, cfg.hostname, cfg.auth.show_user_in_received,
                SenderPolicy(cfg.auth.enforce_sender, self.quota),
                add_missing_headers=cfg.submission.add_missing_headers,
                on_accepted=None if self.events is None else self.events.message,
            ),
            tls_context=self.tls_context,
            admission=self.admission,
            device_auth=self.device_auth,
        )

    def tls_context(self, listener: ListenerConfig) -> SSL.Context:
        """The listener's TLS context: one per (min_tls, tls_ciphers), loaded once."""
        key = (listener.min_tls, listener.tls_ciphers)
        context = self._tls_contexts.get(key)
        if context is None:
            context = self._tls_contexts[key] = self._load_tls(*key)
        return context

    def reload_tls(self, tls: TlsConfig) -> None:
        """Serve ``tls``'s pair to new connections; open ones keep theirs (SIGHUP).

        Raises TlsConfigError, and keeps the running pair, when the new one is unusable.
        """
        from smtpgate.server.tls import make_server_context

        # Not one loaded yet (tls_at_start=False): check the new pair for every listener.
        keys = set(self._tls_contexts) or {
            (lst.min_tls, lst.tls_ciphers) for lst in self.config.listeners if lst.tls != "none"
        }
        fresh = {  # every context first: a broken pair raises before any is replaced
            key: make_server_context(tls.cert, tls.key, min_tls=key[0], ciphers=key[1])
            for key in keys
        }
        self._tls_contexts.update(fresh)

    # -- helpers ---------------------------------------------------------------
    def _admin_listener(self) -> AdminListener | None:
        if self.events is None:
            return None
        from smtpgate.admin.accounts import AdminAccounts
        from smtpgate.admin.context import AdminContext
        from smtpgate.admin.listener import AdminListener
        from smtpgate.ops.metrics import render as render_metrics

        if not isinstance(self.store, AdminAccounts):
            log.warning("the credential store has no admin accounts: nobody can log in")
        return AdminListener(
            AdminContext(
                config=self.config,
                store=self.store,
                admins=self.store if isinstance(self.store, AdminAccounts) else _NO_ADMINS,
                throttle=self.auth.throttle,
                events=self.events,
                metrics=render_metrics,
                ready=self._state_ready,
            )
        )

    async def _state_ready(self) -> bool:
        """/readyz: the shared state answers (always true without ``[state] url``)."""
        from smtpgate.state import ready as state_ready

        return all((await state_ready(self.shared)).values())

    def _load_tls(self, min_tls: str, ciphers: str) -> SSL.Context:
        from smtpgate.server.certs import ensure_self_signed
        from smtpgate.server.tls import make_server_context

        cert, key = self.config.tls.cert, self.config.tls.key
        if ensure_self_signed(cert, key, self.config.hostname):
            log.info("generated a self-signed TLS pair in %s", cert.parent)
        return make_server_context(cert, key, min_tls=min_tls, ciphers=ciphers)

    def _device_auth(self, settings: AuthSettings, throttle: Throttle) -> AuthService | None:
        """For listeners that offer CRAM-MD5 (profile "device"): the same service, with
        CRAM-MD5 added to the mechanisms; it shares the store, throttle, cache and hasher."""
        if not any(lst.offer_cram_md5 for lst in self.config.listeners):
            return None
        if "CRAM-MD5" in settings.mechanisms:
            return self.auth
        wider = dataclasses.replace(settings, mechanisms=(*settings.mechanisms, "CRAM-MD5"))
        return AuthService(
            self.store, wider, throttle, cache=self.auth.cache, hasher=self.auth.hasher,
            on_event=self.auth.on_event,
        )


def _warn_if_weakened(listener: ListenerConfig) -> None:
    """One warning per listener that lets in TLS below 1.2, naming it."""
    if listener.tls == "none":
        return
    from smtpgate.server.tls_base import legacy_tls

    if legacy_tls(listener.min_tls):
        log.warning("listener %s allows TLS %s (below 1.2): for legacy devices only",
                    listener.address, listener.min_tls)


class _NoAdmins:
    """A store without admin accounts: every admin login fails."""

    async def add_admin(self, name: str, password_hash: str) -> None:
        raise ValueError("this credential store cannot hold admin accounts")

    async def admin_hash(self, name: str) -> str | None:
        return None

    async def delete_admin(self, name: str) -> None:
        raise ValueError("this credential store cannot hold admin accounts")


_NO_ADMINS = _NoAdmins()


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
