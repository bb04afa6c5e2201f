"""The door of a ``proxy_protocol`` listener: nothing passes before the PROXY header.

Why a module of its own: the header (parsed by ``server/proxy_header.py``)
comes before anything else on the connection -- limits, greeting, TLS -- and
says who the client is, so the ``Connection`` (``server/connection.py``)
cannot admit anyone until it is read. The waiting, its timeout and the
refusals are kept here; the connection holds a ``ProxyGate`` while it waits,
and on a listener without the PROXY protocol never makes one.

Only a trusted proxy may speak first, and nothing is sent to it before its
header: a peer outside ``trusted_proxies``, a bad header or none within
``PROXY_HEADER_TIMEOUT`` closes the connection without a reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from smtpgate.credentials.devices import in_networks
from smtpgate.server.guard import guarded
from smtpgate.server.proxy_header import PROXY_HEADER_TIMEOUT, ProxyHeaderError, ProxyReader

log = logging.getLogger("smtpgate.server")
Client = tuple[str, int] | None  # (address, port) the header names; None: the socket's peer


def open_gate(
    transport: asyncio.Transport, ip: str, peer: str, trusted_proxies: tuple[str, ...], *,
    admit: Callable[[Client], bool], crash: Callable[[BaseException], None],
) -> ProxyGate | None:
    """A gate waiting for the header of the proxy at ``ip``; ``None`` (closed) if
    that is not a trusted proxy."""
    if not in_networks(ip, trusted_proxies):
        log.info("refused %s: not a trusted proxy", peer)
        transport.close()
        return None
    return ProxyGate(transport, peer, admit=admit, crash=crash)


class ProxyGate:
    """Reads the header; once it is whole, ``admit(client)`` takes the connection
    over and says whether the client was admitted. ``crash``: the connection's."""

    def __init__(self, transport: asyncio.Transport, peer: str, *,
                 admit: Callable[[Client], bool], crash: Callable[[BaseException], None]) -> None:
        self._transport = transport
        self._peer = peer
        self._admit = admit
        self.crash = crash  # where ``guarded`` sends a fault
        self._reader: ProxyReader | None = ProxyReader()  # None once read or refused
        self._timer = asyncio.get_running_loop().call_later(PROXY_HEADER_TIMEOUT, self._late)

    def feed(self, data: bytes) -> bytes:
        """Feed the header; once whole, the real client is admitted and the rest is
        its data (none while the header is incomplete, or for a refused client)."""
        if self._reader is None:
            return b""
        try:
            header = self._reader.feed(data)
        except ProxyHeaderError as exc:
            self._refuse(f"bad PROXY header: {exc}")
            return b""
        if header is None:
            return b""
        self._reader = None
        self._timer.cancel()
        return header.rest if self._admit(header.client) else b""

    def cancel(self) -> None:
        """The connection is gone: stop waiting."""
        self._timer.cancel()

    @guarded
    def _late(self) -> None:
        if self._reader is not None:
            self._refuse("no PROXY header in time")

    def _refuse(self, reason: str) -> None:
        log.info("refused %s: %s", self._peer, reason)
        self._reader = None
        self._transport.close()
