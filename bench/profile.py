"""Profile smtpgate under one bench workload with py-spy (sampling, server pinned).

    bench/build/venv-aiosmtpd/bin/pip install py-spy     # once
    python3 bench/profile.py W1 [W4 ...]
    BENCH_PROFILE_MODE=maildir python3 bench/profile.py W1    # another delivery mode
    BENCH_PROFILE_PYSPY=--gil python3 bench/profile.py W2     # extra py-spy options
    python3 bench/profile.py W5       # relay mode, its sink on the load generator's CPU

Starts smtpgate like the main bench run (workers=1, discard, uvloop as installed, CPU 0;
``BENCH_PROFILE_LOOP=asyncio`` for the standard library's loop),
fills its credentials cache with one AUTH, then records the server with
``py-spy record --format raw`` while the load generator (CPU 1) runs the
workload, and prints the functions with the most samples, self and inclusive.
Raw stacks and the summary go to bench/results/profile-<stamp>-<workload>.*.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import runner

PY_SPY = runner.BUILD / "venv-aiosmtpd" / "bin" / "py-spy"
TOP = 25
# py-spy's idle detection misses threads parked in queue.get: the executor's
# idle workers would otherwise dominate every profile
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)


def summarise(raw: Path) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1] in IDLE_LEAVES:
            idle += n
            continue
        total += n
        self_t[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{total} samples ({idle} idle executor-thread samples left out)"]
    for title, counter in (("self", self_t), ("inclusive", incl)):
        out += ["", f"top {TOP} by {title} samples:"]
        out += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in counter.most_common(TOP)]
    return "\n".join(out) + "\n"


def profile(wname: str) -> None:
    workloads = runner.make_workloads(quick=False)
    wl = workloads[wname]
    mode = os.environ.get("BENCH_PROFILE_MODE", "discard")
    if wname == "W5":  # relay mode with its sink, as in the bench (accepting and relaying)
        spec = runner.relay_spec("smtpgate-profile")
    else:
        spec = runner.smtpgate_spec(
            "smtpgate-profile", runner.free_port(), workers=1, mode=mode,
            cpus=runner.SERVER_CPUS, workloads=(wname,),
            loop=os.environ.get("BENCH_PROFILE_LOOP", "auto"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runner.RESULTS.mkdir(parents=True, exist_ok=True)
    raw = runner.RESULTS / f"profile-{stamp}-{wname}.txt"
    sink = None
    if spec.sink is not None:
        assert spec.sink.prepare is not None
        spec.sink.prepare()
        sink = runner.Server(spec.sink, runner.BUILD / f"profile-{stamp}-sink.log")
        sink.start()
    assert spec.prepare is not None
    spec.prepare()
    server = runner.Server(spec, runner.BUILD / f"profile-{stamp}.log")
    server.start()
    try:
        runner.run_loadgen(workloads["W0"], server)  # warm the credentials cache
        spy = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(server.pid), "--rate", "250",
             "--format", "raw", "--output", str(raw), "--duration", str(int(wl.timeout)),
             *os.environ.get("BENCH_PROFILE_PYSPY", "").split()],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)  # let py-spy attach
        rec = runner.run_loadgen(wl, server)
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    finally:
        server.stop()
        if sink is not None:
            sink.stop()
    print(f"{wname}: value {runner.metric(wl, rec)} server cpu {rec.get('server_cpu_s'):.2f}s "
          f"(py-spy attached, so slower than the bench)")
    if raw.exists():
        summary = summarise(raw)
        raw.with_suffix(".summary.txt").write_text(summary)
        print(summary)
        print(f"raw stacks: {raw}")
    else:
        print("py-spy wrote nothing:", spy.stderr.read().decode() if spy.stderr else "")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not PY_SPY.exists():
        print(__doc__.strip())
        return 2
    runner.snapshot_src()
    for wname in argv[1:]:
        profile(wname)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
