"""Admin page sessions and CSRF tokens, in the memory of the one admin process.

A session is a random 256-bit token in a cookie (``HttpOnly``,
``SameSite=Strict``, ``Secure`` when the request came over TLS); the server
keeps it with its admin name and its own CSRF token, which every form carries
in a hidden field and every POST must echo (compared in constant time). A
session ends on logout, after ``IDLE`` seconds without a request, or after
``LIFETIME`` seconds; at most ``MAX_SESSIONS`` live at once (the oldest goes).
Sessions are lost when the admin process restarts: the admin logs in again.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "smtpgate_admin"
LOGIN_COOKIE = "smtpgate_login"  # the login form's CSRF token, before there is a session
IDLE = 3600.0
LIFETIME = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    admin: str
    csrf: str
    started: float
    seen: float


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison; an empty token never matches."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._live: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def open(self, admin: str) -> tuple[str, Session]:
        now = self.clock()
        token = new_token()
        session = Session(admin, new_token(), now, now)
        self._live[token] = session
        while len(self._live) > MAX_SESSIONS:
            self._live.popitem(last=False)
        return token, session

    def find(self, token: str | None) -> Session | None:
        """The live session of ``token``, touched; None if unknown or expired."""
        if not token:
            return None
        session = self._live.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > IDLE or now - session.started > LIFETIME:
            del self._live[token]
            return None
        session.seen = now
        self._live.move_to_end(token)
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._live.pop(token, None)
