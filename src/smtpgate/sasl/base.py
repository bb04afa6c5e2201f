"""The contract every server-side SASL mechanism follows.

Theory of operation
-------------------
A mechanism is a tiny synchronous state machine (after emersion/go-sasl). It
knows nothing of SMTP, base64, sockets, clocks or storage. The host drives it:

    mech = REGISTRY["SCRAM-SHA-256"](context)
    step = mech.start(initial)          # initial: None = no initial response,
                                        #          b""  = an empty one ("=")
    while isinstance(step, Challenge):
        step = mech.step(client_bytes)  # after sending 334 base64(step.data)
    if isinstance(step, NeedSecret):    # SCRAM, CRAM-MD5: stored secrets wanted
        step = mech.resume(secret)      # host looked them up (or faked them)
        ... keep looping on Challenge ...
    # finally: VerifyPassword (PLAIN, LOGIN), Success or Failure

Two families, as in Dovecot's auth: password mechanisms (PLAIN, LOGIN) end in
``VerifyPassword`` and the host checks the password against the store;
secret mechanisms (SCRAM, CRAM-MD5) ask for stored secrets with
``NeedSecret`` and verify proofs themselves. ``Mechanism.secret_scheme`` says
which (None: a password mechanism), and the registry derives from it which
mechanisms put the password itself on the wire.

For an unknown user the host passes a *fake* secret (stable per name) to
``resume`` so that the exchange looks the same as for a wrong password.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol


class SecretScheme(enum.StrEnum):
    """The stored secrets a mechanism verifies with (RFC 5803 and Dovecot's names)."""

    SCRAM_SHA_1 = "SCRAM-SHA-1"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    CRAM_MD5 = "CRAM-MD5"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334 base64(data)`` and feed the client's answer to ``step``."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class VerifyPassword:
    """Password mechanisms end here: the host verifies and decides."""

    authcid: str
    authzid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NeedSecret:
    """Look up the secret named ``scheme`` for ``authcid`` and call ``resume``."""

    authcid: str
    authzid: str
    scheme: SecretScheme


@dataclass(frozen=True, slots=True)
class Success:
    """Credentials verified by the mechanism itself.

    ``additional`` is data for the client on success (SCRAM server-final). SMTP
    has no room for it in 235, so per RFC 4954 section 4 / RFC 4422 section 5
    the host sends it as a 334 challenge, expects an empty response, then 235.
    """

    authcid: str
    authzid: str
    additional: bytes | None = field(default=None, repr=False)


class FailureKind(enum.Enum):
    INVALID = "invalid"  # wrong credentials, bad proof, unknown user: 535 5.7.8
    MALFORMED = "malformed"  # the client's message breaks the mechanism's syntax: 501 5.5.2


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    reason: str = ""  # for logs; never contains client data


Step = Challenge | VerifyPassword | NeedSecret | Success | Failure


@dataclass(frozen=True, slots=True)
class ScramSecret:
    """RFC 5803 stored SCRAM credentials: salt, iteration count, StoredKey, ServerKey."""

    salt: bytes = field(repr=False)
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CramMd5Secret:
    """Dovecot's CRAM-MD5 scheme: the HMAC-MD5 inner and outer MD5 states (32 bytes)."""

    contexts: bytes = field(repr=False)


Secret = ScramSecret | CramMd5Secret


@dataclass(frozen=True, slots=True)
class ChannelBindings:
    """What the TLS layer knows about this connection's channel (RFC 5929, RFC 9266).

    Absent types are None: tls-unique only on TLS 1.2, tls-exporter only on 1.3.
    """

    tls_server_end_point: bytes | None = field(default=None, repr=False)
    tls_unique: bytes | None = field(default=None, repr=False)
    tls_exporter: bytes | None = field(default=None, repr=False)

    def get(self, name: str) -> bytes | None:
        return {
            "tls-server-end-point": self.tls_server_end_point,
            "tls-unique": self.tls_unique,
            "tls-exporter": self.tls_exporter,
        }.get(name)


@dataclass(frozen=True, slots=True)
class MechanismContext:
    """Everything a mechanism may know about its surroundings."""

    hostname: str = "localhost"
    bindings: ChannelBindings | None = None  # None: not on TLS
    plus_advertised: bool = False  # a -PLUS mechanism was offered (gs2 'y' is a downgrade)
    nonce: Callable[[], str] | None = None  # test hook; None: secrets.token_urlsafe
    timestamp: Callable[[], int] | None = None  # the host's clock, for CRAM-MD5 challenges


class Mechanism(Protocol):
    """One server mechanism; its class attributes are the facts the registry lists."""

    name: ClassVar[str]  # the IANA SASL name, the registry's key
    # The secret ``resume`` wants; None: ends in VerifyPassword (the password is on the wire).
    secret_scheme: ClassVar[SecretScheme | None]
    channel_binding: ClassVar[bool]  # -PLUS: binds to the TLS channel, needs TLS
    server_first: ClassVar[bool]  # an initial response is a protocol error (CRAM-MD5)

    def __init__(self, context: MechanismContext) -> None: ...

    def start(self, initial: bytes | None) -> Step: ...

    def step(self, response: bytes) -> Step: ...

    def resume(self, secret: Secret) -> Step: ...
