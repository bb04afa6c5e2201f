"""Atheris target: ``checks.check_commands`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_commands [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "commands"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
