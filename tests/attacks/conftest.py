"""Fixtures for the attack tests: the e2e server fixture, reused as it is."""

from __future__ import annotations

from tests.e2e.conftest import client_tls, running

__all__ = ["client_tls", "running"]
