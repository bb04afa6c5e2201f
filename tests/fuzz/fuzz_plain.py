"""Atheris target: ``checks.check_plain`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_plain [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "plain"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
