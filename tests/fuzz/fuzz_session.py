"""Atheris target: ``checks.check_session`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_session [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "session"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
