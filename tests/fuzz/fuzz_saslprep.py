"""Atheris target: ``checks.check_saslprep`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_saslprep [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "saslprep"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
