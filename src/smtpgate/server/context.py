"""What a connection needs from the server, as one small object.

``Server`` (``server/app.py``) builds one ``ConnectionContext`` at start and
hands it to every ``Connection`` (``server/connection.py``); a connection
never sees the server itself, so the two modules import in one direction
only, and a test or another host can build a context of its own.

Everything that differs per listener is asked of the context with the
listener: its TLS context (``min_tls``, ``tls_ciphers``), its auth service
(a device listener also offers CRAM-MD5) and its session parameters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smtpgate.auth.service import AuthService
from smtpgate.config.schema import LimitsConfig, ListenerConfig
from smtpgate.credentials.devices import in_networks
from smtpgate.protocol.session import SessionParams
from smtpgate.server.admission import Admission
from smtpgate.server.transaction import Deliveries

if TYPE_CHECKING:  # pyOpenSSL is loaded with the first TLS context (server/tls_base.py)
    from OpenSSL import SSL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    hostname: str  # the greeting's and the Received header's name
    limits: LimitsConfig  # sizes, counts and timeouts (config/schema.py)
    auth: AuthService  # runs AUTH exchanges and advertises mechanisms
    deliveries: Deliveries  # RCPT checks and one Transaction per message
    tls_context: Callable[[ListenerConfig], SSL.Context]  # per listener, loaded on first use
    admission: Admission  # the server-wide connection limits
    device_auth: AuthService | None = None  # ``auth`` plus CRAM-MD5, for offer_cram_md5
    # session_params' answers, made once per (listener, TLS, trusted): a W2 handshake
    # built a 12-field frozen dataclass for every connection. Each value keeps its
    # listener alive, so the id() in its key cannot be reused by another object.
    _params: dict[tuple[int, bool, bool], tuple[ListenerConfig, SessionParams]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def auth_for(self, listener: ListenerConfig) -> AuthService:
        if listener.offer_cram_md5 and self.device_auth is not None:
            return self.device_auth
        return self.auth

    def session_params(
        self, listener: ListenerConfig, tls_active: bool, *, trusted: bool = False
    ) -> SessionParams:
        """What a new Session on ``listener`` may offer now (after STARTTLS: again).

        ``trusted``: the client is in the listener's ``trusted_networks``, so it
        may submit without AUTH.
        """
        key = (id(listener), tls_active, trusted)
        kept = self._params.get(key)
        if kept is not None and kept[0] is listener:
            return kept[1]
        params = SessionParams(
            hostname=self.hostname,
            tls_active=tls_active,
            starttls_offered=listener.tls == "starttls" and not tls_active,
            require_auth=listener.require_auth and not trusted,
            auth_mechanisms=self.auth_for(listener).advertised(tls_active),
            max_message_size=self.limits.max_message_size,
            max_recipients=self.limits.max_recipients,
            max_errors=self.limits.max_errors,
            advertise_auth_equals=listener.advertise_auth_equals,
            auth_after_helo=listener.auth_after_helo,
            normalize_bare_lf=listener.bare_lf == "normalize",
            accept_eight_bit=listener.eight_bit == "accept",
        )
        self._params[key] = (listener, params)  # the listener is kept, so its id stays its own
        return params


def is_trusted(listener: ListenerConfig, ip: str) -> bool:
    """Whether ``ip`` (as the socket reports it) is in the listener's trusted networks."""
    return bool(listener.trusted_networks) and in_networks(ip, listener.trusted_networks)
