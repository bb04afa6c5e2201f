"""ensure_self_signed: generation, modes, idempotence, half-present pairs."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smtpgate.server.certs import CertificateError, ensure_self_signed


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generates_pair_with_modes(tmp_path: Path) -> None:
    cert = tmp_path / "data" / "tls" / "cert.pem"
    key = tmp_path / "data" / "tls" / "key.pem"
    old_umask = os.umask(0o022)  # a permissive umask must not leak into the modes
    try:
        assert ensure_self_signed(cert, key, "mail.example.org") is True
    finally:
        os.umask(old_umask)
    assert _mode(key) == 0o600
    assert _mode(cert) == 0o644
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "tls") == 0o700
    assert sorted(p.name for p in cert.parent.iterdir()) == ["cert.pem", "key.pem"]  # no tmp left


def test_existing_parent_dir_mode_untouched(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    assert ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "h.example")
    assert _mode(tmp_path) == 0o755


def test_certificate_contents(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    ensure_self_signed(cert_path, key_path, "mail.example.org")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=3649) < lifetime < datetime.timedelta(days=3652)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    # self-signed: verifies with its own key
    cert.verify_directly_issued_by(cert)


def test_loopback_hostname_not_duplicated(tmp_path: Path) -> None:
    ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "localhost")
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_idempotent(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert ensure_self_signed(cert, key, "h.example") is True
    before = (cert.read_bytes(), key.read_bytes())
    assert ensure_self_signed(cert, key, "h.example") is False
    assert (cert.read_bytes(), key.read_bytes()) == before


@pytest.mark.parametrize("present", ["cert", "key"])
def test_one_file_present_is_an_error(tmp_path: Path, present: str) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    (cert if present == "cert" else key).write_bytes(b"x")
    missing = key if present == "cert" else cert
    with pytest.raises(CertificateError) as info:
        ensure_self_signed(cert, key, "h.example")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"TLS {'key' if present == 'cert' else 'certificate'} {missing} ")
    assert not missing.exists()


def test_unwritable_directory_is_certificate_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CertificateError):
            ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "h.example")
    finally:
        tmp_path.chmod(0o700)


def test_parent_is_a_file_is_certificate_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CertificateError):
        ensure_self_signed(tmp_path / "f" / "c.pem", tmp_path / "f" / "k.pem", "h.example")
