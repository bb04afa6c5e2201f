"""The values the auth service is configured with and exchanges with a connection."""

from __future__ import annotations

from dataclasses import dataclass

from smtpgate.credentials.base import Account
from smtpgate.policy.mechanisms import MechanismRules
from smtpgate.protocol.replies import Reply
from smtpgate.sasl.base import ChannelBindings, SecretScheme
from smtpgate.sasl.registry import CHANNEL_BOUND_MECHANISMS, PLAINTEXT_MECHANISMS, secret_schemes


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The ``[auth]`` keys of the same names and the server's hostname; defaults live in
    config/schema.py only."""

    mechanisms: tuple[str, ...]
    plaintext_requires_tls: bool
    failure_delay: float
    max_failures_per_connection: int
    hostname: str

    @property
    def cram_md5_enabled(self) -> bool:
        """The enabled mechanisms verify with a stored CRAM-MD5 secret: keep one."""
        return SecretScheme.CRAM_MD5 in secret_schemes(self.mechanisms)

    @property
    def rules(self) -> MechanismRules:
        return MechanismRules(
            configured=self.mechanisms,
            plaintext=PLAINTEXT_MECHANISMS,
            channel_bound=CHANNEL_BOUND_MECHANISMS,
            plaintext_requires_tls=self.plaintext_requires_tls,
        )


@dataclass(frozen=True, slots=True)
class Peer:
    ip: str
    tls_active: bool = False
    bindings: ChannelBindings | None = None
    session_id: str = ""
    listener: str = ""  # the listener's address, for log lines


@dataclass(frozen=True, slots=True)
class Turn:
    """What to send: ``challenge`` as 334, or ``reply`` (and ``user`` on success, with the
    ``account`` whose credentials were proven, read at this AUTH)."""

    challenge: bytes | None = None
    reply: Reply | None = None
    user: str | None = None
    account: Account | None = None


@dataclass(frozen=True, slots=True)
class AuthEvent:
    """One finished AUTH, for an observer (the admin page's event log); never a secret.

    ``login`` is the name the client tried ("" when it gave none), ``outcome``
    an ``Outcome`` value ("ok" on success).
    """

    ip: str
    login: str
    mechanism: str
    outcome: str
