"""Sans-I/O server-side TLS over pyOpenSSL memory BIOs, with channel bindings.

Theory of operation
-------------------
Python's ``ssl`` module cannot export keying material, which SCRAM-*-PLUS needs
for ``tls-exporter`` (RFC 9266), so the server speaks TLS through pyOpenSSL. A
``TlsLayer`` owns one ``OpenSSL.SSL.Connection`` in server (accept) mode whose
socket is replaced by two memory BIOs; it never touches a socket, a clock or
asyncio. The host (the asyncio Protocol) drives it::

    layer = TlsLayer(context)
    # for every chunk received from the network:
    layer.receive_ciphertext(chunk)
    data = layer.read_plaintext()      # drives the handshake; may be b""
    transport.write(layer.outgoing())  # ALWAYS flush: handshake records,
                                       # alerts, TLS 1.3 tickets / KeyUpdates
    if layer.closed: ...               # peer sent close_notify
    # to send:
    layer.write_plaintext(reply); transport.write(layer.outgoing())
    # to close:
    layer.shutdown(); transport.write(layer.outgoing())

On ``TlsError`` the layer is dead, but ``outgoing()`` may still hold the fatal
alert OpenSSL generated; flush it and close the connection.

Buffers stay bounded by the caller: ``read_plaintext`` decrypts only what was
fed since the last call (in 64 KiB ``SSL_read`` calls, at most one 16 KiB record
each) and keeps nothing back; line limits are the caller's business. Nothing
loops per byte.

Channel bindings (RFC 5929, RFC 9266) are computed once, when the handshake
completes, and cached:

* ``tls-server-end-point``: hash of our certificate's DER encoding, with the hash
  of the certificate's signature algorithm, SHA-256 when that is MD5 or SHA-1
  (RFC 5929 section 4.1) or when the algorithm has no separate hash (Ed25519,
  Ed448: RFC 5929 does not define these; SHA-256 is what other implementations
  use).
* ``tls-unique`` (TLS 1.2 only; undefined for 1.3, RFC 9266 section 3): the first
  Finished message of the handshake. In a full handshake the client sends it
  first; in an abbreviated (resumed) one the server does. pyOpenSSL cannot tell
  us whether a session was resumed, so ``make_server_context`` makes resumption
  impossible (no session cache, no tickets) and the first Finished is always
  the client's: ``get_peer_finished()``. Renegotiation, which would change it,
  is disabled too. Resumption is a small loss for a submission server. (On 1.3
  OP_NO_TICKET means stateful tickets: OpenSSL still sends them, but with the
  cache off they never resume; pyOpenSSL has no SSL_CTX_set_num_tickets.)
* ``tls-exporter`` (TLS 1.3 only): ``export_keying_material`` with label
  ``EXPORTER-Channel-Binding``, 32 bytes and an empty context (RFC 9266
  section 2). In TLS 1.3 an absent context and an empty one give the same value
  (RFC 8446 section 7.5), so this matches GnuTLS (gsasl) and OpenSSL clients.
  On 1.2 it would be safe only with extended master secret (RFC 9266 section
  4.2), which pyOpenSSL cannot confirm, so it is only offered on 1.3.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto

from smtpgate.sasl.base import ChannelBindings
from smtpgate.server.tls_base import TlsConfigError as TlsConfigError  # noqa: PLC0414
from smtpgate.server.tls_base import TlsError as TlsError  # noqa: PLC0414
from smtpgate.server.tls_base import legacy_tls as legacy_tls  # noqa: PLC0414

__all__ = [
    "EXPORTER_LABEL",
    "TlsConfigError",
    "TlsError",
    "TlsLayer",
    "check_ciphers",
    "legacy_tls",
    "make_server_context",
]

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
EXPORTER_LENGTH = 32  # RFC 9266 section 2
READ_CHUNK = 64 * 1024  # SSL_read returns at most one 16 KiB record per call anyway
BIO_CHUNK = 256 * 1024  # ciphertext drained per BIO_read in outgoing()

# TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate" minus DHE,
# for which we load no parameters). TLS 1.3 suites are OpenSSL's defaults.
TLS12_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# TLS 1.0 and 1.1 sign the handshake with MD5+SHA-1, which OpenSSL 3 refuses
# above security level 0: a listener below 1.2 needs "@SECLEVEL=0" (and that
# string is its default cipher list). Only for legacy devices (docs/devices.md).
LEGACY_CIPHERS = b"DEFAULT@SECLEVEL=0"
_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}

_WEAK_HASHES = (hashes.MD5, hashes.SHA1)
_ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)



def make_server_context(
    cert: Path, key: Path, *, min_tls: str = "1.2", ciphers: str = ""
) -> SSL.Context:
    """Build the server context: TLS ``min_tls``+, no resumption.

    ``cert`` is a PEM chain (leaf first), ``key`` its PEM private key. ``ciphers``
    is an OpenSSL cipher string for TLS 1.2 and below; empty: the modern AEAD
    list from 1.2 up, ``LEGACY_CIPHERS`` below it. Raises ``TlsConfigError``
    naming the offending file or cipher string.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(_VERSIONS[min_tls])
    context.set_options(
        SSL.OP_NO_COMPRESSION
        # would change tls-unique under our feet; missing from types-pyOpenSSL 24.1:
        | SSL.OP_NO_RENEGOTIATION  # type: ignore[attr-defined]
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_TICKET  # with the cache off below: no resumption at all, see
        # the module docstring on tls-unique
    )
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    _set_ciphers(context, min_tls, ciphers)
    try:
        with cert.open("rb"):  # OpenSSL's "system lib" says less than errno
            pass
        context.use_certificate_chain_file(str(cert))
    except OSError as exc:
        raise TlsConfigError(
            f"cannot read TLS certificate chain {cert}: {exc.strerror or exc}"
        ) from exc
    except SSL.Error as exc:
        raise TlsConfigError(f"cannot load TLS certificate chain {cert}: {_describe(exc)}") from exc
    # Loaded with cryptography, not use_privatekey_file: an encrypted key must fail
    # here, not block on OpenSSL's passphrase prompt on the terminal.
    private_key = _load_private_key(key)
    try:
        context.use_privatekey(private_key)  # type: ignore[arg-type]  # stubs 24.1: PKey only
        context.check_privatekey()
    except SSL.Error as exc:
        raise TlsConfigError(f"TLS private key {key} does not match certificate {cert}") from exc
    return context


def check_ciphers(min_tls: str, ciphers: str) -> None:
    """Raise ``TlsConfigError`` if OpenSSL refuses a listener's ``tls_ciphers``."""
    _set_ciphers(SSL.Context(SSL.TLS_SERVER_METHOD), min_tls, ciphers)


def _set_ciphers(context: SSL.Context, min_tls: str, ciphers: str) -> None:
    if ciphers:
        chosen = ciphers.encode("ascii", "replace")
    else:
        chosen = LEGACY_CIPHERS if legacy_tls(min_tls) else TLS12_CIPHERS
    try:
        context.set_cipher_list(chosen)
    except SSL.Error as exc:
        raise TlsConfigError(f"OpenSSL refuses tls_ciphers {ciphers!r}: {_describe(exc)}") from exc


class TlsLayer:
    """One server-side TLS connection: ciphertext in/out, plaintext in/out."""

    __slots__ = ("_bindings", "_conn", "_failed", "_handshake_done", "closed")

    def __init__(self, context: SSL.Context) -> None:
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._handshake_done = False
        self._failed = False
        self._bindings: ChannelBindings | None = None
        self.closed = False  # the peer sent close_notify

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def version(self) -> str:
        """The negotiated protocol, e.g. "TLSv1.3" (meaningful after the handshake)."""
        return self._conn.get_protocol_version_name()

    @property
    def cipher(self) -> str:
        """The negotiated cipher suite name, "" before the handshake."""
        return self._conn.get_cipher_name() or ""

    def receive_ciphertext(self, data: bytes) -> None:
        """Queue bytes received from the network; call ``read_plaintext`` next."""
        if data:
            self._conn.bio_write(data)

    def read_plaintext(self) -> bytes:
        """Advance the handshake and return all application data now decryptable."""
        if self._failed:
            raise TlsError("TLS connection already failed")
        if self.closed:
            return b""
        if not self._handshake_done and not self._handshake():
            return b""
        conn = self._conn
        chunks: list[bytes] = []
        while True:
            try:
                chunks.append(conn.recv(READ_CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except SSL.Error as exc:
                self._failed = True
                raise TlsError(f"TLS protocol error: {_describe(exc)}") from exc
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def write_plaintext(self, data: bytes) -> None:
        """Encrypt ``data``; the records appear in ``outgoing()``."""
        if not self._handshake_done:
            raise RuntimeError("write_plaintext before the TLS handshake completed")
        if self._failed:
            raise TlsError("TLS connection already failed")
        view = memoryview(data)
        try:
            while view:  # SSL_MODE_ENABLE_PARTIAL_WRITE: loop until all is taken
                view = view[self._conn.send(view) :]
        except SSL.Error as exc:
            self._failed = True
            raise TlsError(f"TLS write failed: {_describe(exc)}") from exc

    def outgoing(self) -> bytes:
        """Drain all ciphertext waiting to go on the wire (b"" if none)."""
        conn = self._conn
        try:
            first = conn.bio_read(BIO_CHUNK)
        except SSL.WantReadError:
            return b""
        if len(first) < BIO_CHUNK:
            return first
        chunks = [first]
        while True:
            try:
                chunks.append(conn.bio_read(BIO_CHUNK))
            except SSL.WantReadError:
                return b"".join(chunks)

    def shutdown(self) -> None:
        """Queue our close_notify in ``outgoing()``. Best effort, never raises."""
        if not self._handshake_done or self._failed:
            return
        with contextlib.suppress(SSL.Error):  # peer gone or broken: the caller closes anyway
            self._conn.shutdown()

    def channel_bindings(self) -> ChannelBindings:
        """This connection's channel bindings (RFC 5929, RFC 9266)."""
        if self._bindings is None:
            raise RuntimeError("channel bindings requested before the TLS handshake completed")
        return self._bindings

    def _handshake(self) -> bool:
        """Drive the handshake; True once it has completed."""
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            self._failed = True
            raise TlsError(f"TLS handshake failed: {_describe(exc)}") from exc
        self._handshake_done = True
        self._bindings = self._compute_bindings()
        return True

    def _compute_bindings(self) -> ChannelBindings:
        conn = self._conn
        version = conn.get_protocol_version()
        own = conn.get_certificate()
        end_point = None
        if own is not None:
            end_point = _server_end_point(crypto.dump_certificate(crypto.FILETYPE_ASN1, own))
        unique = None
        exporter = None
        if version == SSL.TLS1_2_VERSION:
            # First Finished of the handshake; the client's, as resumption is off.
            unique = conn.get_peer_finished()
        elif version == SSL.TLS1_3_VERSION:
            exporter = bytes(conn.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH, b""))
        return ChannelBindings(
            tls_server_end_point=end_point, tls_unique=unique, tls_exporter=exporter
        )


@lru_cache(maxsize=16)
def _server_end_point(der: bytes) -> bytes:
    """RFC 5929 section 4.1 tls-server-end-point for a DER certificate (cached)."""
    algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, _WEAK_HASHES):
        return hashlib.sha256(der).digest()
    return hashlib.new(algorithm.name, der).digest()


def _load_private_key(path: Path) -> _ServerKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read TLS private key {path}: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN" in data:
            loaded = serialization.load_pem_private_key(data, password=None)
        else:
            loaded = serialization.load_der_private_key(data, password=None)
    except TypeError as exc:  # encrypted (cryptography says: password was not given)
        raise TlsConfigError(f"TLS private key {path} is encrypted; store it unencrypted") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsConfigError(f"cannot load TLS private key {path}: not a valid key") from exc
    if not isinstance(loaded, _ServerKey):
        raise TlsConfigError(f"TLS private key {path}: unsupported key type")
    return loaded


def _describe(exc: SSL.Error) -> str:
    """One line from OpenSSL's error queue: the reason strings, no data."""
    args = exc.args
    if args and isinstance(args[0], list):
        reasons = [
            str(entry[-1]) for entry in args[0] if isinstance(entry, tuple) and entry and entry[-1]
        ]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    if isinstance(exc, SSL.SysCallError) and args:
        return str(args[-1])
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
