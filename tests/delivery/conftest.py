"""The e2e server fixture, for delivery tests through a real Server."""

from __future__ import annotations

from tests.e2e.conftest import running

__all__ = ["running"]
