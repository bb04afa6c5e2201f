"""Two smtpgate set-ups, W1 only, run alternately: the ratio per pair and its median.

    python3 bench/pair.py                       # workers = 2 vs 1, both on CPU 0
    BENCH_PAIRS=10 BENCH_W1_MSGS=600 python3 bench/pair.py

For a difference smaller than the bench's run-to-run spread (about 7% for one W1 run
here): each pair starts both servers fresh, warms them with W0, and runs a longer W1
(50 connections x ``BENCH_W1_MSGS`` messages); the first of each pair alternates. The
issue "Performance, round 2" asks that 2 workers pinned to one core lose at most 5%.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import runner


def main() -> int:
    pairs = int(os.environ.get("BENCH_PAIRS", "6"))
    msgs = os.environ.get("BENCH_W1_MSGS", "600")
    workloads = runner.make_workloads(quick=False)
    w1 = workloads["W1"]
    args = list(w1.args)
    args[args.index("--msgs") + 1] = msgs
    workloads["W1"] = replace(w1, args=tuple(args), timeout=600)
    runner.snapshot_src()
    specs = [
        runner.smtpgate_spec(name, runner.free_port(), workers=workers, mode="discard",
                             cpus=runner.SERVER_CPUS, workloads=("W0", "W1"))
        for name, workers in (("smtpgate", 1), ("smtpgate-2w", 2))
    ]
    ratios = []
    with tempfile.TemporaryDirectory() as logs:
        for n in range(pairs):
            rates: dict[str, float] = {}
            for spec in specs if n % 2 == 0 else specs[::-1]:
                entry = runner.run_server_rep(spec, workloads, n + 1, Path(logs))
                value = entry["workloads"].get("W1", {}).get("value")
                if value is None:
                    print(f"pair {n + 1}: {spec.name} failed: {entry.get('error')}")
                    return 1
                rates[spec.name] = value
                time.sleep(1)
            ratio = rates["smtpgate-2w"] / rates["smtpgate"]
            ratios.append(ratio)
            print(f"pair {n + 1}: 1 worker {rates['smtpgate']:,.0f}, 2 workers "
                  f"{rates['smtpgate-2w']:,.0f} msgs/CPU-s: {ratio:.3f}x", flush=True)
    print(f"median of {pairs} pairs: {statistics.median(ratios):.3f}x "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
