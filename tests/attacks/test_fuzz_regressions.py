"""Replays every input the atheris targets ever crashed on (tests/fuzz/crashes/),
plus each target's seeds, through the same oracle. A file there is named
``<target>-crash-<sha1>`` by ``tests/fuzz/run_all.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.checks import CHECKS, SEEDS

CRASHES = Path(__file__).resolve().parents[1] / "fuzz" / "crashes"
CASES = sorted(CRASHES.glob("*-*")) if CRASHES.exists() else []


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_crash_input_no_longer_fails(path: Path) -> None:
    target = path.name.split("-", 1)[0]
    CHECKS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(CHECKS))
def test_seeds(target: str) -> None:
    for seed in SEEDS[target]:
        CHECKS[target](seed)


def test_every_target_has_a_module() -> None:
    here = Path(__file__).resolve().parents[1] / "fuzz"
    for name in CHECKS:
        assert (here / f"fuzz_{name}.py").exists(), name
