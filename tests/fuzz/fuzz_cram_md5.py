"""Atheris target: ``checks.check_cram_md5`` (the oracle is in tests/fuzz/checks.py).

    python -m tests.fuzz.fuzz_cram_md5 [libFuzzer flags] [corpus dir]
"""

from __future__ import annotations

NAME = "cram_md5"

if __name__ == "__main__":
    from tests.fuzz._runner import run

    run(NAME)
