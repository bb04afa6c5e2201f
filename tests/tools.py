"""Third-party tools the tests run: skip when missing, but fail under CI=true.

CI must not go green by skipping what it was meant to check; `make deb-tools`
installs every package named here.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian package that provides each command.
DEBIAN_PACKAGE = {
    "swaks": "swaks",
    "gsasl": "gsasl",
    "msmtp": "msmtp",
    "curl": "curl",
    "gnutls-cli": "gnutls-bin",
    "openssl": "openssl",
    "chromium": "chromium",  # the admin page's browser tests (Playwright drives it)
    "fail2ban-regex": "fail2ban",
    "systemd-analyze": "systemd",
    "strace": "strace",
}


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_tool(name: str) -> str:
    """The path of command ``name``; skip the test if it is missing, fail under CI=true."""
    path = shutil.which(name)
    if path is not None:
        return path
    package = DEBIAN_PACKAGE.get(name, name)
    reason = f"{name} is not installed (Debian package {package}; run `make deb-tools`)"
    if is_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """Like require_tool for a capability of an installed tool (e.g. swaks' TLS support)."""
    if condition:
        return
    if is_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
