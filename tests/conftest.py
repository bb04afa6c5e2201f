"""Session-wide plugins: the log guard (tests/log_guard.py); no testing a stale build."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.log_guard import LogGuard, passwords_in_tests

_guard = LogGuard(passwords_in_tests())


def stale_compiled_modules() -> list[str]:
    """The modules whose source changed since mypyc compiled them (setup.py's manifest):
    their extensions would run, not the source under test."""
    if os.environ.get("SMTPGATE_NO_MYPYC"):
        return []
    try:
        from smtpgate._compiled import SOURCES  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return []  # nothing compiled
    root = Path(__file__).resolve().parent.parent
    return [path for path, digest in SOURCES.items()
            if hashlib.sha256((root / path).read_bytes()).hexdigest() != digest]


def pytest_configure(config: pytest.Config) -> None:
    if stale := stale_compiled_modules():
        pytest.exit(f"changed since compiled: {', '.join(stale)}; run `make test-venv` "
                    "(or SMTPGATE_NO_MYPYC=1 to test the source)", returncode=4)
    logging.getLogger().addHandler(_guard)
    logging.getLogger("smtpgate").setLevel(logging.DEBUG)  # every record reaches the guard


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _guard.current = item.nodeid
    try:
        return (yield)
    finally:
        _guard.current = "(outside a test)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_guard)
    if _guard.leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("secret material in log records:", red=True)
            for leak in _guard.leaks:
                reporter.write_line(f"  {leak}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
