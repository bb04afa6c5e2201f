"""Fixtures of the scale-out tests; the engines themselves live in tests/scaleout/engines.py."""

from __future__ import annotations

import ssl

import pytest


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
