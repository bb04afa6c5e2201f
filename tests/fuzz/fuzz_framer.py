"""Atheris target: ``checks.check_framer`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_framer [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "framer"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
