"""Atheris target: ``checks.check_login`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_login [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "login"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
