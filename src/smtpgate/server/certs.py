"""The self-signed TLS pair generated on first start (``[tls]`` in README, Configuration).

Theory of operation
-------------------
``ensure_self_signed(cert, key, hostname)`` looks at the two configured paths:

* both present: nothing to do (False). Their contents are checked later, when
  ``tls.make_server_context`` loads them.
* exactly one present: a half-installed pair is an operator mistake (or a crash
  between the two renames below); we refuse with ``CertificateError`` naming the
  missing file rather than guessing which half to throw away.
* both absent: generate an ECDSA P-256 key and a self-signed SHA-256 certificate
  (SAN: the hostname, ``localhost``, 127.0.0.1, ::1; valid ten years) and
  return True.

Files are written atomically: each goes to a temporary file in the target
directory (created ``O_EXCL`` with its final mode, so the private key is never
readable by others, not even briefly), is fsynced, and is renamed into place
with ``os.replace``. The key is renamed first: a crash in between leaves only
the key, which the next start reports instead of serving a mismatched pair.
Directories we create are mode 0700; existing directories are left alone.

Generation holds an exclusive ``flock`` on the target directory and re-checks
under it, so two processes starting at once cannot interleave their halves.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# cryptography is imported where a pair is generated (``_generate``): every worker uses
# ``make_private_dirs``, few ever make a certificate (docs/performance.md, "Lean processes").
if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["CertificateError", "ensure_self_signed", "make_private_dirs", "pair_exists"]

VALIDITY = datetime.timedelta(days=3650)  # "valid 10 years"
BACKDATE = datetime.timedelta(minutes=5)  # tolerate clients whose clocks run a little behind


class CertificateError(Exception):
    """The configured certificate/key pair cannot be used or created (one-line message)."""


def ensure_self_signed(cert: Path, key: Path, hostname: str) -> bool:
    """Create a self-signed pair at ``cert``/``key`` if both are absent.

    Returns True when a pair was generated, False when both files already exist.
    Raises ``CertificateError`` when exactly one of them exists or writing fails.
    """
    if pair_exists(cert, key):
        return False
    try:
        make_private_dirs(cert.parent)
        make_private_dirs(key.parent)
        with _locked(key.parent):
            if pair_exists(cert, key):  # another process may have won the race
                return False
            key_pem, cert_pem = _generate(hostname)
            _write_atomic(key, key_pem, 0o600)
            _write_atomic(cert, cert_pem, 0o644)
    except OSError as exc:
        raise CertificateError(
            f"cannot create self-signed TLS pair {cert} / {key}: {exc.strerror or exc}"
        ) from exc
    return True


def pair_exists(cert: Path, key: Path) -> bool:
    """True if both exist, False if both are absent; CertificateError if only one does."""
    has_cert, has_key = cert.exists(), key.exists()
    if has_cert and has_key:
        return True
    if has_cert:
        raise CertificateError(f"TLS key {key} is missing (certificate {cert} exists)")
    if has_key:
        raise CertificateError(f"TLS certificate {cert} is missing (key {key} exists)")
    return False


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700 (umask-proof)."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not fatal if unsupported
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _generate(hostname: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    """Return (key PEM, certificate PEM) for a fresh self-signed ECDSA P-256 pair."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    certificate = builder.sign(private_key, hashes.SHA256())
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _san_entries(hostname: str) -> list[x509.GeneralName]:
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    if hostname:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            try:
                ascii_name = hostname.encode("idna").decode("ascii").lower()
            except UnicodeError:
                raise CertificateError(f"hostname {hostname!r} is not a valid DNS name") from None
            entries.append(x509.DNSName(ascii_name))
    entries += [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    unique: list[x509.GeneralName] = []
    for entry in entries:  # hostname may itself be localhost or a loopback address
        if entry not in unique:
            unique.append(entry)
    return unique
