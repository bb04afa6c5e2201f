"""What the server needs to know about TLS before it loads pyOpenSSL.

``tls.py`` speaks TLS through pyOpenSSL and cryptography, which weigh about
15 MiB resident in every process that imports them. A worker imports
``tls.py`` when its first TLS connection starts (or its first SIGHUP checks a
new pair); until then it needs only these names (docs/performance.md, "Lean
processes"). ``tls.py`` re-exports them.
"""

from __future__ import annotations

_LEGACY_VERSIONS = frozenset({"1.0", "1.1"})


class TlsConfigError(Exception):
    """The certificate or key cannot be loaded (one line, names the file)."""


class TlsError(Exception):
    """The peer broke TLS: failed handshake or protocol error (one line, no secrets)."""


def legacy_tls(min_tls: str) -> bool:
    """Whether ``min_tls`` ("1.0".."1.3") lets in versions below TLS 1.2."""
    return min_tls in _LEGACY_VERSIONS
