"""Atheris target: ``checks.check_xtext`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_xtext [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "xtext"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
