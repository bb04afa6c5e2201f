"""SCRAM-SHA-1 and SCRAM-SHA-256, with and without -PLUS (RFC 5802, RFC 7677).

Theory of operation
-------------------
Four messages (RFC 5802 section 3)::

    C: client-first   n,,n=user,r=<cnonce>           start() / step()
                      -> NeedSecret(user, authzid, "SCRAM-SHA-256")
    S: server-first   r=<cnonce+snonce>,s=<salt>,i=<iter>   resume(secret)
    C: client-final   c=<b64 gs2-header+cbind>,r=<nonce>,p=<proof>   step()
    S: server-final   v=<server signature>           Success.additional

The mechanism parses the client-first message (syntax in ``_scram_syntax``),
settles channel binding at once, then asks the host for the stored secret
(RFC 5803: salt, iterations, StoredKey, ServerKey). For an unknown user the
host passes ``fake_scram_secret``, stable per name, so server-first looks the
same as for a real user and the proof simply never verifies.

Verification (RFC 5802 section 3)::

    AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
    ClientSignature = HMAC(StoredKey, AuthMessage)
    ClientKey       = ClientProof XOR ClientSignature
    accept iff H(ClientKey) == StoredKey          (constant-time)
    ServerSignature = HMAC(ServerKey, AuthMessage)

Channel binding (RFC 5802 section 6, RFC 5929, RFC 9266): a -PLUS mechanism
requires ``p=<type>`` with a type the connection offers; the plain mechanism
refuses ``p=``; ``y`` ("I could bind, but I think you cannot") fails when a
-PLUS mechanism was advertised, which is how a stripped -PLUS offer is
detected. ``c=`` must equal base64(gs2-header + cbind-data) exactly.

Broken syntax is ``Failure(MALFORMED)``. A well-formed flag that contradicts
the mechanism or the connection is ``Failure(INVALID)``: RFC 5802 section 6
says the server MUST fail the authentication, so it is answered and counted
as a failed login, like a wrong proof, nonce or binding. After the exchange
ends every call fails.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from typing import ClassVar

from smtpgate.sasl import _scram_syntax as syntax
from smtpgate.sasl._common import OUT_OF_SEQUENCE, invalid, make_nonce
from smtpgate.sasl.base import (
    Challenge,
    Failure,
    MechanismContext,
    NeedSecret,
    ScramSecret,
    Secret,
    SecretScheme,
    Step,
    Success,
)
from smtpgate.sasl.scram_secrets import (
    HASHES,
    derive_scram_secret,
    fake_scram_secret,
    format_rfc5803,
    parse_dovecot_scram,
    parse_rfc5803,
    secret_fits,
    verify_password_with_scram,
)

__all__ = [
    "CHANNEL_BINDING_TYPES",
    "ScramSha1",
    "ScramSha1Plus",
    "ScramSha256",
    "ScramSha256Plus",
    "derive_scram_secret",
    "fake_scram_secret",
    "format_rfc5803",
    "parse_dovecot_scram",
    "parse_rfc5803",
    "verify_password_with_scram",
]

# RFC 5929 section 3 and 4, RFC 9266 section 2.
CHANNEL_BINDING_TYPES = frozenset({"tls-server-end-point", "tls-unique", "tls-exporter"})


class _State(enum.Enum):
    START = enum.auto()
    AWAIT_CLIENT_FIRST = enum.auto()
    AWAIT_SECRET = enum.auto()
    AWAIT_CLIENT_FINAL = enum.auto()
    DONE = enum.auto()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Scram:
    """Server side of one SCRAM variant; subclasses fix the hash and -PLUS."""

    name: ClassVar[str]
    secret_scheme: ClassVar[SecretScheme | None]
    channel_binding: ClassVar[bool]
    server_first: ClassVar[bool] = False

    def __init__(self, context: MechanismContext) -> None:
        self._context = context
        self._state = _State.START
        self._hash = HASHES[self._scheme()]
        self._first: syntax.ClientFirst | None = None
        self._cbind_input = b""  # gs2-header + cbind-data, RFC 5802 section 7
        self._nonce = ""
        self._server_first = ""
        self._secret: ScramSecret | None = None

    @classmethod
    def _scheme(cls) -> SecretScheme:
        assert cls.secret_scheme is not None
        return cls.secret_scheme

    # -- the Mechanism protocol ------------------------------------------

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.START:
            return self._finish(OUT_OF_SEQUENCE)
        if initial is None:  # RFC 4422 section 5: empty challenge, then client-first
            self._state = _State.AWAIT_CLIENT_FIRST
            return Challenge(b"")
        return self._client_first(initial)

    def step(self, response: bytes) -> Step:
        if self._state is _State.AWAIT_CLIENT_FIRST:
            return self._client_first(response)
        if self._state is _State.AWAIT_CLIENT_FINAL:
            return self._client_final(response)
        return self._finish(OUT_OF_SEQUENCE)

    def resume(self, secret: Secret) -> Step:
        if self._state is not _State.AWAIT_SECRET or self._first is None:
            return self._finish(OUT_OF_SEQUENCE)
        if not isinstance(secret, ScramSecret) or not secret_fits(self._hash, secret):
            return self._finish(invalid("stored secret does not fit this SCRAM variant"))
        self._secret = secret
        self._nonce = self._first.nonce + self._server_nonce()
        # RFC 5802 section 7: server-first-message = [reserved-mext ","] nonce "," salt ","
        #                                            iteration-count ["," extensions]
        self._server_first = f"r={self._nonce},s={_b64(secret.salt)},i={secret.iterations}"
        self._state = _State.AWAIT_CLIENT_FINAL
        return Challenge(self._server_first.encode("ascii"))

    # -- client-first -----------------------------------------------------

    def _client_first(self, data: bytes) -> Step:
        first = syntax.parse_client_first(data)
        if isinstance(first, Failure):
            return self._finish(first)
        binding = self._channel_binding(first)
        if isinstance(binding, Failure):
            return self._finish(binding)
        self._first = first
        self._cbind_input = first.gs2_header.encode("utf-8") + binding
        self._state = _State.AWAIT_SECRET
        return NeedSecret(authcid=first.username, authzid=first.authzid, scheme=self._scheme())

    def _channel_binding(self, first: syntax.ClientFirst) -> bytes | Failure:
        """The cbind-data for ``c=`` or a Failure (RFC 5802 section 6)."""
        if first.cbind_flag == "p":
            if not self.channel_binding:
                return invalid("channel binding requested on a non-PLUS mechanism")
            bindings = self._context.bindings
            data = None
            if bindings is not None and first.cb_name in CHANNEL_BINDING_TYPES:
                data = bindings.get(first.cb_name)
            if not data:
                return invalid("channel binding type not available on this connection")
            return data
        if self.channel_binding:
            return invalid("-PLUS mechanism used without channel binding")
        if first.cbind_flag == "y" and self._context.plus_advertised:
            return invalid("gs2 'y' flag while -PLUS was advertised: downgrade")
        return b""

    # -- client-final -----------------------------------------------------

    def _client_final(self, data: bytes) -> Step:
        final = syntax.parse_client_final(data, self._hash.digest_size)
        if isinstance(final, Failure):
            return self._finish(final)
        if final.channel_binding != _b64(self._cbind_input):
            return self._finish(invalid("channel binding data mismatch"))
        if final.nonce != self._nonce:
            return self._finish(invalid("nonce mismatch"))
        return self._finish(self._verify(final))

    def _verify(self, final: syntax.ClientFinal) -> Step:
        """RFC 5802 section 3: check ClientProof, produce ServerSignature."""
        assert self._first is not None and self._secret is not None
        auth_message = ",".join((self._first.bare, self._server_first, final.without_proof)).encode(
            "utf-8"
        )
        name = self._hash.hashlib_name
        signature = hmac.new(self._secret.stored_key, auth_message, name).digest()
        client_key = bytes(p ^ s for p, s in zip(final.proof, signature, strict=True))
        stored_key = hashlib.new(name, client_key).digest()
        if not hmac.compare_digest(stored_key, self._secret.stored_key):
            return invalid("SCRAM proof does not verify")
        server_signature = hmac.new(self._secret.server_key, auth_message, name).digest()
        return Success(
            authcid=self._first.username,
            authzid=self._first.authzid,
            additional=b"v=" + base64.b64encode(server_signature),
        )

    # -- helpers ----------------------------------------------------------

    def _server_nonce(self) -> str:
        nonce = make_nonce(self._context)
        if not syntax.is_printable(nonce):  # a broken test hook must not break syntax
            raise ValueError("server nonce must be printable ASCII without ','")
        return nonce

    def _finish(self, step: Step) -> Step:
        self._state = _State.DONE
        self._secret = None
        return step


class ScramSha1(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-1"
    secret_scheme: ClassVar[SecretScheme | None] = SecretScheme.SCRAM_SHA_1
    channel_binding: ClassVar[bool] = False


class ScramSha1Plus(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-1-PLUS"
    secret_scheme: ClassVar[SecretScheme | None] = SecretScheme.SCRAM_SHA_1
    channel_binding: ClassVar[bool] = True


class ScramSha256(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-256"
    secret_scheme: ClassVar[SecretScheme | None] = SecretScheme.SCRAM_SHA_256
    channel_binding: ClassVar[bool] = False


class ScramSha256Plus(_Scram):
    name: ClassVar[str] = "SCRAM-SHA-256-PLUS"
    secret_scheme: ClassVar[SecretScheme | None] = SecretScheme.SCRAM_SHA_256
    channel_binding: ClassVar[bool] = True
