"""TLS on one connection: a ``TlsLayer`` between the socket and the session.

Why a module of its own: the ``Connection`` (``server/connection.py``) needs
to know only whether TLS is on and where its plaintext goes; the records TLS
sends by itself (handshake, alerts, close_notify), the failures, their log
lines and the TLS version gauge are kept here. On plain TCP the connection
does no TLS work beyond one ``tls is not None``.

pyOpenSSL is imported by the first TLS connection of the process, not with
this module (``server/tls_base.py``; docs/performance.md, "Lean processes").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from smtpgate.config.schema import ListenerConfig
from smtpgate.ops import metrics
from smtpgate.sasl.base import ChannelBindings
from smtpgate.server.context import ConnectionContext
from smtpgate.server.tls_base import TlsError

if TYPE_CHECKING:
    from OpenSSL import SSL

log = logging.getLogger("smtpgate.server")


def start_tls(
    context: ConnectionContext, listener: ListenerConfig, transport: asyncio.Transport,
    session_id: str, *, secured: Callable[[], None], close: Callable[[], None],
) -> ConnectionTls | None:
    """TLS on ``transport`` with the listener's context, waiting for the client's
    handshake; ``None`` (logged, ``close`` called) when that context cannot be loaded."""
    try:
        tls_context = context.tls_context(listener)
    except Exception as exc:  # a pair that no longer loads: this client cannot be served
        log.error("session=%s cannot start TLS: %s", session_id, exc)
        close()
        return None
    return ConnectionTls(tls_context, transport, session_id, secured=secured, close=close)


class ConnectionTls:
    """One connection's TLS. ``secured`` is called once the handshake completes (the
    connection starts a new session, RFC 3207 section 4.2); ``close`` ends the
    connection when TLS fails or the client sends close_notify. Made only for an
    admitted connection, which releases the version gauge with its slot."""

    def __init__(self, context: SSL.Context, transport: asyncio.Transport, session_id: str, *,
                 secured: Callable[[], None], close: Callable[[], None]) -> None:
        from smtpgate.server.tls import TlsLayer  # the first TLS connection loads pyOpenSSL

        self._layer = TlsLayer(context)
        self._transport = transport
        self._session_id = session_id
        self._secured = secured
        self._close = close
        self._gauge: metrics.Gauge | None = None  # the TLS version gauge counting us

    def decrypt(self, data: bytes) -> bytes:
        """Ciphertext from the socket in, the plaintext it completes out; what TLS
        answers by itself goes straight back to the socket."""
        layer = self._layer
        was_done = layer.handshake_done
        layer.receive_ciphertext(data)
        try:
            plaintext = layer.read_plaintext()
        except TlsError as exc:
            log.info("session=%s TLS failed: %s", self._session_id, exc)
            self._send_raw(layer.outgoing())
            self._close()
            return b""
        self._send_raw(layer.outgoing())
        if not was_done and layer.handshake_done:
            log.info("session=%s TLS %s %s", self._session_id, layer.version, layer.cipher)
            self._count(layer.version)
            self._secured()
        if layer.closed:
            self._close()
        return plaintext

    def send(self, data: bytes) -> None:
        """Encrypt replies and write them; a TLS failure closes the connection instead."""
        try:
            self._layer.write_plaintext(data)
        except TlsError:
            self._close()
            return
        data = self._layer.outgoing()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close_notify(self) -> None:
        """The connection is closing: our close_notify goes out first (best effort)."""
        self._layer.shutdown()
        self._send_raw(self._layer.outgoing())

    def channel_bindings(self) -> ChannelBindings:
        return self._layer.channel_bindings()

    def release(self) -> None:
        """The connection is gone: it no longer counts in the TLS version gauge."""
        if self._gauge is not None:
            self._gauge.dec()

    def _count(self, version: str) -> None:
        gauge = metrics.get().tls_gauge(version)
        if gauge is not None and self._gauge is None:
            gauge.inc()
            self._gauge = gauge

    def _send_raw(self, data: bytes) -> None:
        if data and not self._transport.is_closing():
            self._transport.write(data)
