"""A device listener (profile = "device", docs/devices.md) with real clients: openssl
s_client and Python's ssl at TLS 1.0/1.1, swaks with AUTH LOGIN and with HELO, a raw
client that reads only the "AUTH=" line, CRAM-MD5 without TLS; the same clients are
refused on a normal listener."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import warnings
from typing import Any

import pytest

from smtpgate.config.schema import ListenerConfig
from tests.attacks.raw import Raw, b64
from tests.e2e.conftest import free_port
from tests.interop.clients import swaks
from tests.interop.conftest import PASSWORD, Gate, received_with, require_tool, run_tool

DEFAULT_MECHANISMS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1",
                      "PLAIN", "LOGIN"]  # without CRAM-MD5: the profile adds it
LEGACY_CIPHERS = "DEFAULT@SECLEVEL=0"  # what Debian's OpenSSL 3 clients need for TLS < 1.2


def listeners() -> list[dict[str, Any]]:
    def at(**keys: Any) -> dict[str, Any]:
        return {"address": f"127.0.0.1:{free_port()}", **keys}

    return [
        at(tls="starttls", profile="device"),
        at(tls="implicit", profile="device"),
        at(tls="none", profile="device", trusted_networks=["127.0.0.2/32"]),
        at(tls="implicit"),
        at(tls="none"),
        at(tls="starttls"),
    ]


def port(gate: Gate, tls: str, *, device: bool) -> int:
    for lst in gate.config.listeners:
        if lst.tls == tls and (lst.profile == "device") == device:
            return lst.port
    raise LookupError((tls, device))


@pytest.fixture
async def devices(start_gate: Any) -> Gate:
    gate: Gate = await start_gate(auth={"mechanisms": DEFAULT_MECHANISMS},
                                  listener=listeners())
    return gate


async def s_client(gate: Gate, port: int, *args: str) -> str:
    path = require_tool("openssl")
    result = await run_tool(
        [path, "s_client", "-connect", f"{gate.host}:{port}", "-ign_eof", *args],
        stdin=b"QUIT\r\n",
    )
    return result.output


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
async def test_openssl_s_client_old_tls_on_device_listener(devices: Gate, version: str) -> None:
    expected = {"-tls1": "TLSv1", "-tls1_1": "TLSv1.1"}[version]
    out = await s_client(devices, port(devices, "implicit", device=True),
                         version, "-cipher", LEGACY_CIPHERS)
    assert f"Protocol  : {expected}\n" in out, out
    assert "220 mx.test ESMTP smtpgate" in out and "221 2.0.0" in out, out
    out = await s_client(devices, port(devices, "starttls", device=True),
                         version, "-cipher", LEGACY_CIPHERS, "-starttls", "smtp")
    assert f"Protocol  : {expected}\n" in out and "221 2.0.0" in out, out


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
async def test_openssl_s_client_old_tls_refused_on_normal_listener(
    devices: Gate, version: str
) -> None:
    out = await s_client(devices, port(devices, "implicit", device=False),
                         version, "-cipher", LEGACY_CIPHERS)
    assert "alert protocol version" in out and "220 mx.test" not in out, out
    out = await s_client(devices, port(devices, "starttls", device=False),
                         version, "-cipher", LEGACY_CIPHERS, "-starttls", "smtp")
    assert "alert protocol version" in out and "221 2.0.0" not in out, out


def tls1_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLSv1 is deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


async def test_python_ssl_tls1_device_listener_only(devices: Gate) -> None:
    c = await Raw.open((devices.host, port(devices, "implicit", device=True)), tls=tls1_client())
    assert c.writer.get_extra_info("ssl_object").version() == "TLSv1"
    await c.ehlo()
    await c.close()
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|protocol version"):
        await Raw.open((devices.host, port(devices, "implicit", device=False)),
                       tls=tls1_client())


async def test_start_warns_about_each_listener_below_tls_1_2(
    start_gate: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smtpgate.server")
    gate: Gate = await start_gate(listener=listeners())
    warned = [r.getMessage() for r in caplog.records if "below 1.2" in r.getMessage()]
    named = {lst.address for lst in gate.config.listeners
             if lst.profile == "device" and lst.tls != "none"}
    assert len(warned) == len(named) == 2
    assert {m.split()[1] for m in warned} == named


async def test_swaks_auth_login_on_device_listener(devices: Gate) -> None:
    rcpt = "copier@example.org"
    result = await swaks(devices, port(devices, "starttls", device=True), "--tls",
                         "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", PASSWORD,
                         "--to", rcpt)
    assert result.returncode == 0, result.describe()
    assert "<~  250 AUTH=SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 PLAIN " \
        "LOGIN CRAM-MD5\n" in result.stdout, result.describe()
    assert "<~  235 2.7.0" in result.stdout
    assert received_with(devices.only_message(rcpt)) == "ESMTPSA"


async def test_swaks_helo_from_a_trusted_network(devices: Gate) -> None:
    """--protocol SMTP: HELO, no AUTH, from 127.0.0.2 (the listener's trusted network);
    the same client from 127.0.0.1 gets 530 5.7.0."""
    rcpt = "lan-copier@example.org"
    target = port(devices, "none", device=True)
    args = ("--protocol", "SMTP", "--to", rcpt)
    result = await swaks(devices, target, "--local-interface", "127.0.0.2", *args, tls=False)
    assert " -> HELO client.test" in result.stdout and "EHLO" not in result.stdout
    assert result.returncode == 0, result.describe()
    message = devices.only_message(rcpt)
    assert received_with(message) == "SMTP"  # RFC 3848: HELO, no AUTH
    assert b"(trusted network)" in message.split(b"\r\n\r\n")[0]
    result = await swaks(devices, target, "--local-interface", "127.0.0.1", *args, tls=False)
    assert result.returncode != 0 and "<** 530 5.7.0" in result.stdout, result.describe()
    assert len(devices.stored(rcpt)) == 1


async def read_only_auth_equals(c: Raw) -> list[str]:
    """What a 2006 client does: ignore "AUTH mech..." and read "AUTH=mech...", only."""
    ehlo = await c.ehlo()
    (line,) = [text for text in ehlo.lines if text.startswith("AUTH=")]
    return line.removeprefix("AUTH=").split()


async def test_raw_client_reading_only_auth_equals(devices: Gate) -> None:
    c = await Raw.open((devices.host, port(devices, "starttls", device=True)))
    await c.ehlo()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    await c.starttls(ctx)
    mechanisms = await read_only_auth_equals(c)
    assert "LOGIN" in mechanisms and "PLAIN" in mechanisms
    resp = await c.cmd("AUTH LOGIN")
    assert (resp.code, base64.b64decode(resp.lines[0])) == (334, b"Username:")
    assert (await c.cmd(b64("alice"))).code == 334
    resp = await c.cmd(b64(PASSWORD))
    assert (resp.code, resp.enh) == (235, "2.7.0"), resp
    await c.close()
    c = await Raw.open((devices.host, port(devices, "none", device=False)))
    ehlo = await c.ehlo()
    assert not any(text.startswith("AUTH=") for text in ehlo.lines)  # normal listener
    await c.close()


async def test_cram_md5_offered_without_tls_on_device_listener(devices: Gate) -> None:
    """The profile adds CRAM-MD5 to that listener's offer, TLS or not; PLAIN and LOGIN
    stay behind TLS. The account gets its CRAM-MD5 secret at its first PLAIN/LOGIN
    on a device listener (alice was created without one)."""
    c = await Raw.open((devices.host, port(devices, "none", device=True)))
    assert await read_only_auth_equals(c) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
    await c.close()
    c = await Raw.open((devices.host, port(devices, "none", device=False)))
    ehlo = await c.ehlo()
    assert not any("CRAM-MD5" in text for text in ehlo.lines)
    await c.close()
    account = await devices.account("alice")
    assert account is not None and account.cram_md5 is None
    login = await swaks(devices, port(devices, "implicit", device=True), "--tlsc",
                        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD,
                        "--to", "first@example.org")
    assert login.returncode == 0, login.describe()
    for _ in range(50):  # the secret is stored after the 235
        account = await devices.account("alice")
        if account is not None and account.cram_md5 is not None:
            break
        await asyncio.sleep(0.1)
    rcpt = "cram@example.org"
    result = await swaks(devices, port(devices, "none", device=True), "--auth", "CRAM-MD5",
                         "--auth-user", "alice", "--auth-password", PASSWORD, "--to", rcpt,
                         tls=False)
    assert result.returncode == 0, result.describe()
    assert received_with(devices.only_message(rcpt)) == "ESMTPA"


def test_listener_fixture_has_both_kinds() -> None:
    kinds = {(d["tls"], d.get("profile", "")) for d in listeners()}
    assert ("implicit", "device") in kinds and ("implicit", "") in kinds
    assert ListenerConfig("a:1", "a", 1).profile == ""
