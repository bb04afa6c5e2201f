"""Per-listener TLS settings, trusted networks and the trusted Received header, in isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpgate.cli import main as cli
from smtpgate.cli.common import cram_md5_enabled
from smtpgate.config.schema import ListenerConfig
from smtpgate.delivery.base import Envelope
from smtpgate.delivery.received import received_header
from smtpgate.server.context import is_trusted
from smtpgate.server.preflight import StartupError, check
from smtpgate.server.tls import TlsConfigError, check_ciphers, legacy_tls
from tests.e2e.conftest import make_config


@pytest.mark.parametrize(("version", "legacy"), [("1.0", True), ("1.1", True), ("1.2", False),
                                                 ("1.3", False)])
def test_legacy_tls(version: str, legacy: bool) -> None:
    assert legacy_tls(version) is legacy


def test_cipher_strings_are_checked() -> None:
    check_ciphers("1.0", "")
    check_ciphers("1.0", "DEFAULT@SECLEVEL=0")
    check_ciphers("1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    with pytest.raises(TlsConfigError, match="no cipher match"):
        check_ciphers("1.2", "NO-SUCH-CIPHER")


def test_a_bad_cipher_string_stops_start_naming_the_listener(tmp_path: Path) -> None:
    config = make_config(tmp_path, listener=[
        {"address": "127.0.0.1:2525", "tls": "starttls", "tls_ciphers": "NO-SUCH-CIPHER"}])
    with pytest.raises(StartupError, match=r"^listener 127\.0\.0\.1:2525: .*NO-SUCH-CIPHER"):
        check(config)
    plain = make_config(tmp_path, listener=[
        {"address": "127.0.0.1:2525", "tls": "none", "tls_ciphers": "NO-SUCH-CIPHER"}])
    check(plain)  # no TLS on that listener: the string is never used


def test_check_config_reports_the_bad_cipher_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "smtpgate.toml"
    path.write_text('data_dir = "data"\nhostname = "mx.example"\n[[listener]]\n'
                    'address = "127.0.0.1:2525"\nprofile = "device"\ntls_ciphers = "NOPE"\n')
    assert cli.main(["--config", str(path), "check-config"]) != 0
    assert "listener 127.0.0.1:2525" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("192.0.2.7", True), ("192.0.3.1", False), ("::ffff:192.0.2.9", True),
        ("2001:db8::1", True), ("2001:db9::1", False), ("fe80::1%eth0", False), ("?", False),
    ],
)
def test_is_trusted(ip: str, trusted: bool) -> None:
    listener = ListenerConfig("a:1", "a", 1, trusted_networks=("192.0.2.0/24", "2001:db8::/32"))
    assert is_trusted(listener, ip) is trusted
    assert is_trusted(ListenerConfig("a:1", "a", 1), ip) is False


def test_received_header_of_a_trusted_network_client() -> None:
    envelope = Envelope(session_id="s", peer="192.0.2.7:1234", helo="copier.lan", esmtp=True,
                        tls=False, authenticated_user=None, mail_from="a@b",
                        recipients=("c@d",), received_at=0, trusted_network=True)
    header = received_header(envelope, hostname="mx.test", show_user=False, message_id="Q1")
    lines = header.decode().split("\r\n")
    assert lines[:3] == ["Received: from copier.lan ([192.0.2.7])", "\t(trusted network)",
                         "\tby mx.test (smtpgate) with ESMTP id Q1"]


def test_a_device_listener_makes_accounts_keep_a_cram_md5_secret(tmp_path: Path) -> None:
    """user add / device add store a CRAM-MD5 secret when any listener offers CRAM-MD5."""
    normal = make_config(tmp_path)
    assert not cram_md5_enabled(normal)
    devices = make_config(tmp_path, listener=[
        {"address": "127.0.0.1:2525", "tls": "none", "profile": "device"}])
    assert cram_md5_enabled(devices)
