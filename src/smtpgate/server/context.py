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
from smtpgate.config.schema import LimitsConfig
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
