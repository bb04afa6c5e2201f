"""What the admin listener may use: the server's own objects, never a connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smtpgate.admin.accounts import AdminAccounts
from smtpgate.admin.events import EventLog
from smtpgate.config.schema import Config
from smtpgate.credentials.base import CredentialStore
from smtpgate.policy.throttle import Throttle

# /metrics: the exposition text and its content type; None answers 503.
MetricsRender = Callable[[], tuple[bytes, str]]
# /readyz: extra checks (the shared state of [state] url); True when usable.
ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class AdminContext:
    config: Config
    store: CredentialStore
    admins: AdminAccounts
    throttle: Throttle
    events: EventLog
    metrics: MetricsRender | None = None
    ready: ReadyCheck | None = None
