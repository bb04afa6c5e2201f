"""The PROXY header parser (server/proxy_header.py) against HAProxy's spec examples."""

from __future__ import annotations

import pytest

from smtpgate.credentials.devices import in_networks
from smtpgate.server.proxy_header import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyReader,
    parse,
    v1_header,
    v2_header,
)

CLIENT4, SERVER4 = ("192.0.2.10", 51000), ("198.51.100.1", 587)
CLIENT6, SERVER6 = ("2001:db8::7", 40000), ("2001:db8::1", 465)


def test_v1_tcp4_names_the_client_and_its_length() -> None:
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 587\r\n"
    result = parse(header + b"EHLO x\r\n")
    assert result is not None
    assert result.client == ("192.0.2.10", 51000)
    assert result.consumed == len(header)


def test_v1_tcp6_and_unknown() -> None:
    result = parse(v1_header(CLIENT6, SERVER6))
    assert result is not None and result.client == CLIENT6
    unknown = parse(b"PROXY UNKNOWN\r\n")
    assert unknown is not None and unknown.client is None and unknown.consumed == 15


def test_v2_tcp4_tcp6_and_local() -> None:
    for client, server in ((CLIENT4, SERVER4), (CLIENT6, SERVER6)):
        header = v2_header(client, server)
        result = parse(header + b"\x16\x03\x01")
        assert result is not None
        assert result.client == client and result.consumed == len(header)
    local = parse(v2_header(CLIENT4, SERVER4, local=True))
    assert local is not None and local.client is None


def test_v2_tlvs_after_the_addresses_are_skipped() -> None:
    plain = v2_header(CLIENT4, SERVER4)
    tlv = b"\x05\x00\x03abc"  # PP2_TYPE_UNIQUE_ID
    header = plain[:14] + (12 + len(tlv)).to_bytes(2, "big") + plain[16:] + tlv
    result = parse(header + b"rest")
    assert result is not None
    assert result.client == CLIENT4 and result.consumed == len(header)


@pytest.mark.parametrize("cut", [1, 5, 12, 15, 20])
def test_incomplete_headers_wait_for_more(cut: int) -> None:
    assert parse(v2_header(CLIENT4, SERVER4)[:cut]) is None
    assert parse(v1_header(CLIENT4, SERVER4)[:cut]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello without a header
        b"PROXY TCP4 192.0.2.10 198.51.100.1 51000\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 51000 587\r\n",
        b"PROXY TCP4 192.0.2.300 198.51.100.1 51000 587\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 70000 587\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 0510 587\r\n",
        b"PROXY TCP5 192.0.2.10 198.51.100.1 51000 587\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 587\n",
        b"PROXY " + b"A" * V1_MAX,
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # shorter than two IPv4 addresses
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # longer than V2_MAX
    ],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_v2_length_limit_is_the_whole_header() -> None:
    fits = V2_SIGNATURE + b"\x20\x00" + (V2_MAX - 16).to_bytes(2, "big")
    assert parse(fits) is None  # a LOCAL header of V2_MAX octets is still awaited
    too_long = V2_SIGNATURE + b"\x20\x00" + (V2_MAX - 15).to_bytes(2, "big")
    with pytest.raises(ProxyHeaderError):
        parse(too_long)


def test_reader_collects_pieces_and_returns_what_follows() -> None:
    reader = ProxyReader()
    data = v2_header(CLIENT4, SERVER4) + b"EHLO x\r\n"
    for octet in data[:-9]:
        assert reader.feed(bytes([octet])) is None
    header = reader.feed(data[-9:])
    assert header is not None
    assert header.client == CLIENT4 and header.rest == b"EHLO x\r\n"


def test_trusted_proxies_are_cidrs() -> None:
    proxies = ("127.0.0.0/8", "2001:db8::/32")
    assert in_networks("127.0.0.2", proxies)
    assert in_networks("::ffff:127.0.0.1", proxies)
    assert in_networks("2001:db8::5", proxies)
    assert not in_networks("192.0.2.1", proxies)
    assert not in_networks("not an address", proxies)
    assert not in_networks("127.0.0.1", ())
