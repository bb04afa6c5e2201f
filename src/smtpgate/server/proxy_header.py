"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2).

Theory of operation
-------------------
A load balancer that passes TCP through opens its own connection to us, so the
socket's peer is the balancer. With ``proxy_protocol = true`` the balancer
first sends one header naming the real client; ``parse`` reads it from the
start of the stream. Pure: bytes in, a result out, no I/O.

``parse(data)`` returns ``None`` while the header is still incomplete, a
``ProxyHeader`` once it is whole (``consumed`` octets of ``data`` are the
header; the rest is the client's first bytes), and raises
``ProxyHeaderError`` for anything that is not a valid header. It is bounded:
a version 1 line is at most 107 octets (the spec's limit), a version 2
header at most ``V2_MAX`` octets; more without a complete header is an error.

``client`` is ``None`` for a header that names no client (v1 ``UNKNOWN``,
v2 ``LOCAL`` such as a balancer's health check, or a family other than TCP
over IPv4/IPv6): the spec says the receiver then uses the real connection's
addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # "PROXY TCP6 <39> <39> <5> <5>\r\n": the spec's worst case
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, length
V2_MAX = 4096  # address block plus TLVs: far above what HAProxy sends
PROXY_HEADER_TIMEOUT = 10.0  # seconds a trusted proxy has to send its header
_V2_TCP4, _V2_TCP6 = 0x11, 0x21
_V2_ADDRESS_SIZE = {_V2_TCP4: 12, _V2_TCP6: 36}


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(ValueError):
    """Not a valid PROXY header (the reason names what, never echoes the bytes)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    client: tuple[str, int] | None  # (address, port), or None: use the socket's peer
    consumed: int  # octets of the header


class ProxyReader:
    """Collects a header that arrives in pieces; ``feed`` returns it with the rest."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Header | None:
        self._buffer += data  # bounded: parse fails past V1_MAX or V2_MAX octets
        header = parse(self._buffer)
        if header is None:
            return None
        return Header(header.client, self._buffer[header.consumed :])


@dataclass(frozen=True, slots=True)
class Header:
    client: tuple[str, int] | None  # as in ProxyHeader
    rest: bytes  # what followed the header: the client's first bytes


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, None if incomplete; ProxyHeaderError if bad."""
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data)
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY header signature")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("v1 line too long or not ended by CRLF")
        return None
    fields = data[:end].split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return ProxyHeader(None, end + 2)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("v1 line is not PROXY TCP4|TCP6 src dst sport dport")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _v1_address(fields[2], version)
    _v1_address(fields[3], version)
    port = _v1_port(fields[4])
    _v1_port(fields[5])
    return ProxyHeader((source, port), end + 2)


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("v1 address is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError("v1 address does not match its protocol")
    return str(address)


def _v1_port(text: bytes) -> int:
    # The spec forbids leading zeros; isdigit() on bytes is ASCII only.
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyHeaderError("v1 port is not a number")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError("v1 port out of range")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyHeaderError("v2 version or command unknown")
    family = data[13]
    length = int.from_bytes(data[14:16], "big")
    total = V2_FIXED + length
    if total > V2_MAX:
        raise ProxyHeaderError("v2 header too long")
    needed = _V2_ADDRESS_SIZE.get(family, 0)
    if command == 1 and length < needed:
        raise ProxyHeaderError("v2 length shorter than its addresses")
    if len(data) < total:
        return None
    if command == 0 or needed == 0:  # LOCAL (health check) or not TCP over IP
        return ProxyHeader(None, total)
    block = data[V2_FIXED:total]
    if family == _V2_TCP4:
        source = str(ipaddress.IPv4Address(block[0:4]))
        port = int.from_bytes(block[8:10], "big")
    else:
        source = str(ipaddress.IPv6Address(block[0:16]))
        port = int.from_bytes(block[32:34], "big")
    return ProxyHeader((source, port), total)


def v1_header(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """A version 1 header (for tests and tools that speak to a listener directly)."""
    proto = "TCP6" if ":" in client[0] else "TCP4"
    return f"PROXY {proto} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def v2_header(client: tuple[str, int], server: tuple[str, int], *, local: bool = False) -> bytes:
    """A version 2 header, PROXY (or LOCAL) over TCP, without TLVs."""
    src, dst = ipaddress.ip_address(client[0]), ipaddress.ip_address(server[0])
    family = _V2_TCP6 if src.version == 6 else _V2_TCP4
    block = src.packed + dst.packed + client[1].to_bytes(2, "big") + server[1].to_bytes(2, "big")
    command = 0x20 if local else 0x21
    return V2_SIGNATURE + bytes([command, family]) + len(block).to_bytes(2, "big") + block
