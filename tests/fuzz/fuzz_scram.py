"""Atheris target: ``checks.check_scram`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_scram [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "scram"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
