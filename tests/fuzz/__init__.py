"""Atheris fuzz targets, one per parser; oracles live in ``checks``.

Run them all with ``python -m tests.fuzz.run_all SECONDS`` (``make fuzz``), or
one with ``python -m tests.fuzz.fuzz_framer [libFuzzer flags]``. Crash inputs
are kept in ``tests/fuzz/crashes/`` and replayed by
``tests/attacks/test_fuzz_regressions.py``.
"""
