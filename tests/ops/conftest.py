"""Fixtures for the operations tests: the end-to-end server, a clean log setup."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from smtpgate.ops import logs
from tests.e2e.conftest import client_tls, running

__all__ = ["client_tls", "log_stream", "running"]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Where ``logs.configure(stream=...)`` writes; the handler and name mode are undone."""
    stream = io.StringIO()
    before = (logs._Names.mode, logs._Names.key)
    yield stream
    logs.stop_thread()  # a threaded configuration's listener, if a test made one
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "smtpgate", False)]:
        root.removeHandler(handler)
    logs._Names.mode, logs._Names.key = before
