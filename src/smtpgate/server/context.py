"""What a connection needs from the server, as one small object.

``Server`` (``server/app.py``) builds one ``ConnectionContext`` at start and
hands it to every ``Connection`` (``server/connection.py``); a connection
never sees the server itself, so the two modules import in one direction
only, and a test or another host can build a context of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from OpenSSL import SSL

from smtpgate.auth.service import AuthService
from smtpgate.config.schema import LimitsConfig, ListenerConfig
from smtpgate.protocol.session import SessionParams
from smtpgate.server.admission import Admission
from smtpgate.server.transaction import Deliveries


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    hostname: str  # the greeting's and the Received header's name
    limits: LimitsConfig  # sizes, counts and timeouts (config/schema.py)
    auth: AuthService  # runs AUTH exchanges and advertises mechanisms
    deliveries: Deliveries  # RCPT checks and one Transaction per message
    tls_context: Callable[[], SSL.Context]  # loaded on first use by the server
    admission: Admission  # the server-wide connection limits

    def session_params(self, listener: ListenerConfig, tls_active: bool) -> SessionParams:
        """What a new Session on ``listener`` may offer now (after STARTTLS: again)."""
        return SessionParams(
            hostname=self.hostname,
            tls_active=tls_active,
            starttls_offered=listener.tls == "starttls" and not tls_active,
            require_auth=listener.require_auth,
            auth_mechanisms=self.auth.advertised(tls_active),
            max_message_size=self.limits.max_message_size,
            max_recipients=self.limits.max_recipients,
            max_errors=self.limits.max_errors,
        )
