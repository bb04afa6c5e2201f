"""Start-up checks shared by ``smtpgate serve`` and ``smtpgate check-config``.

Theory of operation
-------------------
Everything that can stop the server from starting is found here, once, before
any worker is forked, and reported as one ``StartupError`` line naming the
path or address and the reason:

* ``data_dir`` is a directory we can write, or can be created (no file in
  the way, no unwritable parent);
* with a TLS listener, the certificate and key both exist and load and
  match, or both are absent (a self-signed pair will be generated) and their
  folder can be created; one without the other is an error;
* (``prepare`` only) each listener's address can be bound now.

``check`` changes nothing (``check-config``). ``prepare`` (``serve``) also
creates ``data_dir`` (mode 0700), generates the self-signed pair when none is
configured, and probes the listeners' ports; a port taken by another
program is reported here rather than by every worker.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from smtpgate.config.schema import Config, ListenerConfig
from smtpgate.server.certs import CertificateError, ensure_self_signed, make_private_dirs
from smtpgate.server.certs import pair_exists as tls_pair_exists
from smtpgate.server.tls_base import TlsConfigError

# tls.py (pyOpenSSL) is imported by the checks that load a pair or ciphers: workers import
# this module for ``bind_listener`` and must not load it at start (server/tls_base.py).


class StartupError(Exception):
    """The server cannot start; ``str()`` is one line."""


def uses_tls(config: Config) -> bool:
    return any(listener.tls != "none" for listener in config.listeners)


def check(config: Config) -> None:
    """Raise StartupError for the first problem ``serve`` would hit; change nothing."""
    _check_folder(config.data_dir, "data_dir")
    if not uses_tls(config):
        return
    _check_listener_ciphers(config)
    cert, key = config.tls.cert, config.tls.key
    try:
        present = tls_pair_exists(cert, key)
    except CertificateError as exc:
        raise StartupError(str(exc)) from None
    if present:
        _load_tls(cert, key)
    else:
        _check_folder(cert.parent, "tls.cert's folder")
        _check_folder(key.parent, "tls.key's folder")


def prepare(config: Config) -> None:
    """``check``, then create what is missing and probe every listener's address."""
    check(config)
    try:
        make_private_dirs(config.data_dir)
        if uses_tls(config) and ensure_self_signed(
            config.tls.cert, config.tls.key, config.hostname
        ):
            _load_tls(config.tls.cert, config.tls.key)
    except (OSError, CertificateError) as exc:
        raise StartupError(_reason(exc)) from None
    for listener in config.listeners:
        bind_listener(listener, reuse_port=False).close()


def bind_listener(listener: ListenerConfig, *, reuse_port: bool) -> socket.socket:
    """A listening, non-blocking socket for ``listener``; StartupError if it cannot be."""
    try:
        infos = socket.getaddrinfo(
            listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"cannot listen on {listener.address}: {_reason(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {listener.address}: {_reason(exc)}") from None
    return sock


def _check_listener_ciphers(config: Config) -> None:
    from smtpgate.server.tls import check_ciphers

    for listener in config.listeners:
        if listener.tls == "none":
            continue
        try:
            check_ciphers(listener.min_tls, listener.tls_ciphers)
        except TlsConfigError as exc:
            raise StartupError(f"listener {listener.address}: {exc}") from None


def _load_tls(cert: Path, key: Path) -> None:
    from smtpgate.server.tls import make_server_context

    try:
        make_server_context(cert, key)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from None


def _check_folder(path: Path, what: str) -> None:
    """``path`` is a writable directory, or the nearest existing ancestor is one."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f": {existing}"
        raise StartupError(f"{what} {path}{where} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StartupError(f"{what} {path}: {existing} is not writable")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
