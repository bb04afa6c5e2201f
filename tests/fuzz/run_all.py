"""Run every atheris target for SECONDS each, in parallel; report and keep crashes.

    python -m tests.fuzz.run_all SECONDS        (make fuzz FUZZ_SECONDS=N)

Each target runs as ``python -m tests.fuzz.fuzz_<name>`` under libFuzzer with
``-max_total_time=SECONDS``, seeded from ``checks.SEEDS`` plus its corpus in
``tests/fuzz/.corpus/<name>/`` (git-ignored). Crash inputs are written to
``tests/fuzz/crashes/<name>-crash-<sha1>``; commit them: the regression test
``tests/attacks/test_fuzz_regressions.py`` replays every file there. Exits 1
when any target crashed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.checks import CHECKS, SEEDS

ROOT = Path(__file__).resolve().parents[2]
CRASHES = Path(__file__).resolve().parent / "crashes"
CORPUS = Path(__file__).resolve().parent / ".corpus"


@dataclass
class Result:
    name: str
    returncode: int
    executions: int
    coverage: int
    features: int
    corpus: int
    crashes: list[Path]
    tail: str


def _stat(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def run_target(name: str, seconds: int) -> Result:
    corpus = CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS.get(name, []):
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    CRASHES.mkdir(exist_ok=True)
    before = set(CRASHES.glob(f"{name}-*"))
    cmd = [sys.executable, "-m", f"tests.fuzz.fuzz_{name}", f"-max_total_time={seconds}",
           f"-artifact_prefix={CRASHES}/{name}-", "-print_final_stats=1", "-max_len=4096",
           "-timeout=10", "-rss_limit_mb=2048", str(corpus)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=seconds + 120)
    log = done.stdout + done.stderr
    return Result(
        name=name,
        returncode=done.returncode,
        executions=_stat(r"stat::number_of_executed_units:\s+(\d+)", log)
        or _stat(r"#(\d+)\s+DONE", log),
        coverage=_stat(r"cov: (\d+)", log),
        features=_stat(r"ft: (\d+)", log),
        corpus=_stat(r"corp: (\d+)", log),
        crashes=sorted(set(CRASHES.glob(f"{name}-*")) - before),
        tail="\n".join(log.strip().splitlines()[-25:]),
    )


def main(argv: list[str]) -> int:
    seconds = int(argv[0]) if argv else 60
    names = list(CHECKS)
    workers = max(1, min(len(names), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda n: run_target(n, seconds), names))
    print(f"{'target':<10} {'executions':>11} {'cov':>6} {'ft':>7} {'corpus':>7}  result")
    failed = False
    for res in results:
        ok = res.returncode == 0 and not res.crashes
        failed |= not ok
        status = "ok" if ok else f"FAILED (exit {res.returncode}, {len(res.crashes)} crash file(s))"
        print(f"{res.name:<10} {res.executions:>11} {res.coverage:>6} {res.features:>7} "
              f"{res.corpus:>7}  {status}")
    print(f"total executions: {sum(r.executions for r in results)} in {seconds} s per target")
    for res in results:
        if res.returncode != 0 or res.crashes:
            print(f"\n--- {res.name} ---\n{res.tail}")
            for path in res.crashes:
                print(f"kept crash input: {path.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
