"""Shared atheris entry point: instrument smtpgate and the oracles, then fuzz."""

from __future__ import annotations

import sys


def run(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["smtpgate", "tests.fuzz.checks"]):
        from tests.fuzz import checks
    atheris.Setup(sys.argv, checks.CHECKS[name])
    atheris.Fuzz()
