"""Session-wide plugins: the log guard (tests/log_guard.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.log_guard import LogGuard, passwords_in_tests

_guard = LogGuard(passwords_in_tests())


def pytest_configure(config: pytest.Config) -> None:
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
