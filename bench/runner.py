"""Run the smtpgate benchmark: W1-W4 against smtpgate and its peers, interleaved; W5
(relay mode to a local sink) as a variant.

Started by bench/run.sh (which builds the load generator and installs the peers);
standard library only, run with the system python3.

Environment:
    BENCH_REPS=N        repetitions (default 3)
    BENCH_QUICK=1       one repetition with small counts (a smoke run)
    BENCH_SERVERS=a,b   only these servers/variants (names as in the tables)
    BENCH_SMTPGATE=PATH smtpgate executable (default .venv/bin/smtpgate)
    BENCH_SRC=DIR       the smtpgate source tree to measure (default src/; e.g. an older
                        commit's src/ from git archive, built extensions copied in)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import report

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
LOADGEN = BUILD / "loadgen"
PGID_FILE = BUILD / "servers.pgid"
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER = "bench"
PASSWORD = "bench-password-1"
RCPT = "sink@bench.test"
SERVER_CPUS = "0"
LOADGEN_CPUS = "1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    args: tuple[str, ...]
    timeout: float
    conns: int = 0


def make_workloads(quick: bool) -> dict[str, Workload]:
    w1 = (10, 50) if quick else (50, 200)
    w2_total, w2_secs = (500, 3) if quick else (3000, 8)
    w3 = 500 if quick else 2000
    w4 = (4, 3) if quick else (4, 20)
    return {
        "W0": Workload(
            "W0",
            "20 concurrent first AUTHs on a fresh server (cold credentials cache)",
            ("--mode", "handshake", "--conns", "20", "--total", "20"),
            timeout=120,
        ),
        "W1": Workload(
            "W1",
            f"{w1[0]} conns x {w1[1]} msgs x 10 KiB, AUTH once per conn",
            ("--mode", "send", "--conns", str(w1[0]), "--msgs", str(w1[1]), "--size", "10240"),
            timeout=150,
        ),
        "W2": Workload(
            "W2",
            f"connect+EHLO+AUTH PLAIN+QUIT, 20 concurrent (<= {w2_total} or {w2_secs} s)",
            ("--mode", "handshake", "--conns", "20", "--total", str(w2_total),
             "--duration", str(w2_secs)),
            timeout=w2_secs + 60,
        ),
        "W3": Workload(
            "W3",
            f"{w3} idle connections after EHLO",
            ("--mode", "idle", "--conns", str(w3), "--hold", "20", "--ramp", "100"),
            timeout=90,
            conns=w3,
        ),
        "W5": Workload(
            "W5",
            f"W1 load ({w1[0]} x {w1[1]} x 10 KiB) in relay mode, upstream a local sink",
            ("--mode", "send", "--conns", str(w1[0]), "--msgs", str(w1[1]), "--size", "10240"),
            timeout=150,
        ),
        "W4": Workload(
            "W4",
            f"{w4[0]} conns x {w4[1]} msgs x 5 MiB",
            ("--mode", "send", "--conns", str(w4[0]), "--msgs", str(w4[1]),
             "--size", str(5 * 1024 * 1024)),
            timeout=150,
        ),
    }


# ---------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (worker processes, helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """utime+stime (and that of reaped children) summed over the tree, in seconds."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields:
            # fields[11..14]: utime stime cutime cstime (stat fields 14-17)
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_kb(root: int, key: str) -> int:
    """VmRSS / VmHWM in KiB summed over the process tree."""
    return sum(_status_kb(pid, key) for pid in tree_pids(root))


# ---------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    name: str  # column / row name in the report
    argv: list[str]  # "{port}" is replaced by port
    port: int
    cpus: str | None  # taskset list, None = unpinned
    workloads: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    note: str = ""
    sink: ServerSpec | None = None  # started before this server, stopped after (W5 upstream)
    queue_dir: Path | None = None  # relay mode: W5 waits until no record is left here


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int) -> bool:
    """True once the server answers a 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            ok = s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def _record_pgid(pgid: int, add: bool) -> None:
    pgids = set()
    if PGID_FILE.exists():
        pgids = {int(x) for x in PGID_FILE.read_text().split()}
    if add:
        pgids.add(pgid)
    else:
        pgids.discard(pgid)
    PGID_FILE.write_text("".join(f"{p}\n" for p in sorted(pgids)))


class Server:
    def __init__(self, spec: ServerSpec, log: Path) -> None:
        self.spec = spec
        self.port = spec.port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.spec.argv]
        if self.spec.cpus is not None:
            argv = ["taskset", "-c", self.spec.cpus, *argv]
        env = {**os.environ, **self.spec.env}
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, cwd=BUILD,
            )
        _record_pgid(self.proc.pid, add=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.spec.name} exited with {self.proc.returncode}: "
                                  + self.log_tail())
            if probe(self.port):
                return
            if "Traceback" in self.log_tail(200):
                self.stop()
                raise ServerError(f"{self.spec.name} fails on connections: " + self.log_tail())
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"{self.spec.name} not answering on {self.port} after "
                          f"{START_TIMEOUT:.0f} s: " + self.log_tail())

    def log_tail(self, n: int = 8) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        # whatever is left of the group (workers), by its id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        _record_pgid(pgid, add=False)
        self.proc = None


# ---------------------------------------------------------------- smtpgate


def smtpgate_bin() -> Path:
    return Path(os.environ.get("BENCH_SMTPGATE", REPO / ".venv" / "bin" / "smtpgate"))


def smtpgate_config(data_dir: Path, port: int, workers: int, mode: str, *,
                    require_auth: bool = True, loop: str = "auto", extra: str = "") -> str:
    return f"""# generated by bench/runner.py
data_dir = "{data_dir}"
hostname = "smtpgate.bench.test"

[server]
workers = {workers}
loop = "{loop}"

[[listener]]
address = "127.0.0.1:{port}"
tls = "none"
require_auth = {"true" if require_auth else "false"}

[auth]
plaintext_requires_tls = false
failure_delay = 0

[limits]
max_connections = 5000
max_connections_per_ip = 5000

[delivery]
mode = "{mode}"
{extra}"""


def smtpgate_spec(name: str, port: int, *, workers: int, mode: str, cpus: str | None,
                  workloads: tuple[str, ...], note: str = "", require_auth: bool = True,
                  loop: str = "auto", extra: str = "") -> ServerSpec:
    scratch = SCRATCH / name
    cfg = scratch / "smtpgate.toml"
    exe = str(smtpgate_bin())
    env = snapshot_env()

    def prepare() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / "data").mkdir(parents=True)
        cfg.write_text(smtpgate_config(scratch / "data", port, workers, mode,
                                       require_auth=require_auth, loop=loop, extra=extra))
        try:
            res = subprocess.run(
                [exe, "--config", str(cfg), "user", "add", USER, "--password-stdin"],
                input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=60, check=False,
                env={**os.environ, **env},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerError(f"smtpgate user add: {exc}") from exc
        if res.returncode != 0:
            out = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
            raise ServerError(f"smtpgate user add exited {res.returncode}: "
                              + " | ".join(out[-5:]))

    return ServerSpec(name, [exe, "--config", str(cfg), "serve"], port, cpus, workloads,
                      env=env, prepare=prepare, note=note,
                      queue_dir=scratch / "data" / "queue" if mode == "relay" else None)


def relay_spec(name: str) -> ServerSpec:
    """smtpgate in relay mode (pinned like the others) whose smarthost is a second smtpgate
    in discard mode on loopback, pinned with the load generator: its CPU is not counted."""
    sink_port = free_port()
    sink = smtpgate_spec(f"{name}-sink", sink_port, workers=1, mode="discard",
                         cpus=LOADGEN_CPUS, workloads=(), require_auth=False)
    relay = (f'\n[relay]\nhost = "127.0.0.1"\nport = {sink_port}\ntls = "none"\n'
             'retry = "1s"\n')
    spec = smtpgate_spec(name, free_port(), workers=1, mode="relay", cpus=SERVER_CPUS,
                         workloads=("W0", "W5"), extra=relay,
                         note="delivery.mode=relay: durable queue (group commit), "
                              "upstream a local smtpgate in discard mode")
    spec.sink = sink
    return spec


def queue_spec(name: str) -> ServerSpec:
    """smtpgate in relay mode whose smarthost never answers (a socket that listens and
    never accepts): its W1 is the acceptance path alone, durable queueing with group
    commit and none of the relaying. ``in_flow_delay`` is off, since no 250 should wait
    for a backlog that cannot shrink."""
    relay = (f'\n[relay]\nhost = "127.0.0.1"\nport = {silent_port()}\ntls = "none"\n'
             'in_flow_delay = ""\n')
    return smtpgate_spec(name, free_port(), workers=1, mode="relay", cpus=SERVER_CPUS,
                         workloads=("W0", "W1"), extra=relay,
                         note="delivery.mode=relay, the upstream silent: accepting into the "
                              "durable queue alone")


_SILENT: list[socket.socket] = []  # kept open (and never accepted from) until the run ends


def silent_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    _SILENT.append(sock)
    port: int = sock.getsockname()[1]
    return port


SNAPSHOT = BUILD / "snapshot" / "src"  # copy of src/ taken when the run starts
# The servers' data_dirs. BENCH_SCRATCH puts them on another file system, e.g. a freshly
# made ext4 when / is shared with jobs that create and delete many files (README).
SCRATCH = Path(os.environ.get("BENCH_SCRATCH") or BUILD / "scratch")


def snapshot_env() -> dict[str, str]:
    """PYTHONPATH that runs smtpgate from the snapshot of src/ (``snapshot_src``), with
    the project venv's packages as installed: uvloop included, so ``[server] loop =
    "auto"`` picks it as on a user's machine."""
    return {"PYTHONPATH": str(SNAPSHOT)}


def snapshot_src() -> None:
    """Freeze the smtpgate code for the whole run.

    The project venv installs src/ in editable mode and src/ may change while
    the bench runs (other work in the same tree); every server start would pick
    up different code. PYTHONPATH puts this copy (built extensions included)
    ahead of the editable install.
    """
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    shutil.copytree(Path(os.environ.get("BENCH_SRC", REPO / "src")), SNAPSHOT,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


# ---------------------------------------------------------------- specs


def build_specs(quick: bool) -> tuple[list[ServerSpec], list[ServerSpec]]:
    """(main comparison, variants)."""
    # W3 first: its per-connection memory is measured against a server that has
    # not yet accumulated garbage and buffers from the heavy workloads. W0 next:
    # the first AUTHs, which for smtpgate verify an Argon2id hash and fill its
    # verified-credentials cache (60 s), so W1/W2 then measure the warm path.
    all_w = ("W3", "W0", "W1", "W2", "W4")
    apy = str(BUILD / "venv-aiosmtpd" / "bin" / "python")
    aio = [apy, str(BENCH / "peers" / "aiosmtpd_server.py"), "--port", "{port}",
           "--user", USER, "--password", PASSWORD]
    node = ["node", str(BENCH / "peers" / "node_server.js"), "--port", "{port}",
            "--user", USER, "--password", PASSWORD]
    main = [
        smtpgate_spec("smtpgate", free_port(), workers=1, mode="discard", cpus=SERVER_CPUS,
                      workloads=all_w),
        ServerSpec("aiosmtpd", aio, free_port(), SERVER_CPUS, all_w),
        ServerSpec("node", node, free_port(), SERVER_CPUS, all_w),
    ]
    variants = [
        smtpgate_spec("smtpgate-maildir", free_port(), workers=1, mode="maildir",
                      cpus=SERVER_CPUS, workloads=("W0", "W1", "W4"),
                      note="delivery.mode=maildir (fsync per message)"),
        smtpgate_spec("smtpgate-w1-unpinned", free_port(), workers=1, mode="discard",
                      cpus=None, workloads=("W0", "W1", "W2"),
                      note="workers=1, no taskset (baseline for workers=2)"),
        smtpgate_spec("smtpgate-w2-unpinned", free_port(), workers=2, mode="discard",
                      cpus=None, workloads=("W0", "W1", "W2"),
                      note="workers=2, no taskset: shares both cores with the load generator"),
        ServerSpec("aiosmtpd-uvloop", [*aio, "--uvloop"], free_port(), SERVER_CPUS,
                   ("W1", "W2", "W4"), note="aiosmtpd on uvloop"),
        relay_spec("smtpgate-relay"),
        queue_spec("smtpgate-queue"),
        smtpgate_spec("smtpgate-asyncio", free_port(), workers=1, mode="discard",
                      cpus=SERVER_CPUS, workloads=("W0", "W1", "W2", "W4"), loop="asyncio",
                      note='[server] loop = "asyncio": the standard library\'s event loop'),
        ServerSpec("python-floor", [apy, str(BENCH / "peers" / "floor_server.py"), "--port",
                                    "{port}"], free_port(), SERVER_CPUS, ("W1", "W2"),
                   note="not a server: answers each line by its verb on uvloop (the floor "
                        "any Python server pays: loop callbacks, reads, writes, kernel)"),
        smtpgate_spec("smtpgate-2w", free_port(), workers=2, mode="discard",
                      cpus=SERVER_CPUS, workloads=("W0", "W1", "W2"),
                      note="workers=2, both on CPU 0 (taskset -c 0): the cost of a second "
                           "worker without a core of its own"),
    ]
    wanted = os.environ.get("BENCH_SERVERS")
    if wanted:
        names = set(wanted.split(","))
        main = [s for s in main if s.name in names]
        variants = [s for s in variants if s.name in names]
    return main, variants


# ---------------------------------------------------------------- one workload


def run_loadgen(wl: Workload, server: Server) -> dict[str, Any]:
    argv = ["taskset", "-c", LOADGEN_CPUS, str(LOADGEN), "--host", "127.0.0.1",
            "--port", str(server.port), "--user", USER, "--password", PASSWORD,
            "--rcpt", RCPT, "--timeout", str(wl.timeout), *wl.args]
    assert "--mode" in argv
    rec: dict[str, Any] = {"workload": wl.name}
    if wl.name == "W3":
        # warm up the connection path (lazy imports, JIT, allocator pools) so the
        # baseline RSS is not dominated by one-off costs
        subprocess.run([*argv[:argv.index("--mode")], "--mode", "idle", "--conns", "50",
                        "--hold", "0.2"], capture_output=True, timeout=wl.timeout + 15,
                       check=False)
        time.sleep(1.0)
    cpu0 = tree_cpu(server.pid)
    busy0 = machine_busy()
    rss0 = tree_kb(server.pid, "VmRSS")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        if wl.name == "W3":
            # wait for {"event":"ready"}, let the server settle, measure, release
            for line in proc.stdout:
                lines.append(line)
                if '"ready"' in line:
                    time.sleep(1.0)
                    rec["rss_idle_kb"] = tree_kb(server.pid, "VmRSS")
                    proc.send_signal(signal.SIGUSR1)
                    break
        out, err = proc.communicate(timeout=wl.timeout + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rec["error"] = f"load generator hung past {wl.timeout + 15:.0f} s"
    lines.extend(out.splitlines())
    time.sleep(0.3)  # let the server finish closing connections
    rec["wall_s_runner"] = time.monotonic() - t0
    rec["server_cpu_s"] = tree_cpu(server.pid) - cpu0
    rec["machine_busy_s"] = machine_busy() - busy0
    rec["rss_before_kb"] = rss0
    rec["rss_after_kb"] = tree_kb(server.pid, "VmRSS")
    result = None
    for raw in lines:
        line = raw.strip()
        if line.startswith("{") and '"result"' in line:
            result = json.loads(line)
    if result is None:
        rec.setdefault("error", f"no result from load generator (rc {proc.returncode}): "
                       + err.strip()[-300:])
        return rec
    rec["loadgen"] = result
    if wl.name == "W5" and server.spec.queue_dir is not None:
        wait_drained(rec, server, t0, wl.timeout)
    # CPU used by anything but the server and the load generator (other jobs on
    # the machine, the runner itself), in cores: a noise indicator
    other = rec["machine_busy_s"] - rec["server_cpu_s"] - result.get("cpu_s", 0.0)
    rec["other_load_cores"] = max(other, 0.0) / rec["wall_s_runner"]
    if not result.get("ok"):
        rec.setdefault("error", result.get("first_error") or err.strip()[-300:])
    return rec


def wait_drained(rec: dict[str, Any], server: Server, t0: float, timeout: float) -> None:
    """W5: wait until the relay's queue is empty; end-to-end delivered per wall second
    (from the load generator's start) and the server CPU for accepting and relaying."""
    assert server.spec.queue_dir is not None
    cpu0 = tree_cpu(server.pid) - rec["server_cpu_s"]
    deadline = time.monotonic() + timeout
    while any(server.spec.queue_dir.glob("*.msg")):
        if time.monotonic() > deadline:
            rec["error"] = f"queue not drained after {timeout:.0f} s"
            return
        time.sleep(0.05)
    drained = time.monotonic() - t0
    rec["drained_s"] = drained
    rec["delivered_per_s"] = rec["loadgen"]["messages"] / drained
    rec["server_cpu_drained_s"] = tree_cpu(server.pid) - cpu0


def metric(wl: Workload, rec: dict[str, Any]) -> float | None:
    lg = rec.get("loadgen")
    if not lg or rec.get("error"):
        return None
    cpu = rec["server_cpu_s"]
    if wl.name == "W0":
        return 1000 * cpu / lg["handshakes"] if lg["handshakes"] else None
    if wl.name in ("W1", "W5"):
        return lg["messages"] / cpu if cpu > 0 else None
    if wl.name == "W2":
        return lg["handshakes"] / cpu if cpu > 0 else None
    if wl.name == "W3":
        idle = rec.get("rss_idle_kb")
        return (idle - rec["rss_before_kb"]) / lg["idle_conns"] if idle else None
    if wl.name == "W4":
        return lg["bytes"] / lg["wall_s"] / 1e6
    return None


# ---------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for name, cmd in {
        "node": ["node", "--version"],
        "smtpgate_python": [str(REPO / ".venv" / "bin" / "python"), "--version"],
        "aiosmtpd_python": [str(BUILD / "venv-aiosmtpd" / "bin" / "python"), "--version"],
    }.items():
        try:
            versions[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                            check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "?"
    try:
        pkg = json.loads((BUILD / "node" / "node_modules" / "smtp-server" / "package.json")
                         .read_text())
        versions["smtp-server"] = pkg["version"]
    except (OSError, ValueError, KeyError):
        versions["smtp-server"] = "?"
    try:
        versions["aiosmtpd"] = subprocess.run(
            [str(BUILD / "venv-aiosmtpd" / "bin" / "python"), "-c",
             "import aiosmtpd; print(aiosmtpd.__version__)"],
            capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        versions["aiosmtpd"] = "?"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI"],
                              capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10,
                               check=False).stdout.strip()
        versions["smtpgate"] = head + (" (src/ modified)" if dirty else "") + \
            ", measured from a copy of src/ taken at the start"
        if os.environ.get("BENCH_SRC"):
            versions["smtpgate"] = f"the tree in {os.environ['BENCH_SRC']} (BENCH_SRC)"
    except (OSError, subprocess.TimeoutExpired):
        versions["smtpgate"] = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "runner_python": platform.python_version(),
        "versions": versions,
        "server_cpus": SERVER_CPUS,
        "loadgen_cpus": LOADGEN_CPUS,
    }


def run_server_rep(spec: ServerSpec, workloads: dict[str, Workload], rep: int,
                   logdir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"server": spec.name, "rep": rep, "workloads": {}}
    port = spec.port
    server = Server(spec, logdir / f"{spec.name}-rep{rep}.log")
    sink = Server(spec.sink, logdir / f"{spec.sink.name}-rep{rep}.log") if spec.sink else None
    t0 = time.monotonic()
    try:
        if spec.sink and sink:
            if spec.sink.prepare:
                spec.sink.prepare()
            sink.start()
        if spec.prepare:
            spec.prepare()
        server.start()
        entry["rss_start_kb"] = tree_kb(server.pid, "VmRSS")
        for wname in spec.workloads:
            wl = workloads[wname]
            if not server.alive() or not probe(port):
                entry["workloads"][wname] = {"workload": wname, "error": "server not answering"
                                             " (died in an earlier workload?)"}
                continue
            rec = run_loadgen(wl, server)
            rec["value"] = metric(wl, rec)
            entry["workloads"][wname] = rec
            lg = rec.get("loadgen", {})
            val = rec["value"]
            shown = f"{val:,.1f}" if val is not None else f"ERROR {rec.get('error')}"
            print(f"  rep {rep} {spec.name:22} {wname}: {shown}  server cpu "
                  f"{rec['server_cpu_s']:.2f}s  loadgen {lg.get('cpu_pct_of_wall', 0):.0f}% "
                  f"of {lg.get('wall_s', 0):.1f}s"
                  + (f"  delivered {rec['delivered_per_s']:,.1f}/s (cpu to drain "
                     f"{rec['server_cpu_drained_s']:.2f}s)" if "delivered_per_s" in rec else ""),
                  flush=True)
        entry["peak_rss_kb"] = tree_kb(server.pid, "VmHWM") if server.alive() else None
    except ServerError as exc:
        entry["error"] = str(exc)
        print(f"  rep {rep} {spec.name:22} unavailable: {exc}", flush=True)
    finally:
        server.stop()
        if sink:
            sink.stop()
    entry["seconds"] = time.monotonic() - t0
    return entry


def main() -> int:
    # SIGTERM/SIGINT unwind through the finally blocks that stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = os.environ.get("BENCH_QUICK") == "1"
    snapshot_src()
    reps = int(os.environ.get("BENCH_REPS", "1" if quick else "3"))
    workloads = make_workloads(quick)
    main_specs, variants = build_specs(quick)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = BUILD / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / f"{stamp}.json"
    doc: dict[str, Any] = {
        "machine": machine_info(),
        "quick": quick,
        "reps": reps,
        "workloads": {k: {"title": w.title, "args": list(w.args)} for k, w in workloads.items()},
        "servers": {s.name: {"cpus": s.cpus, "note": s.note, "workloads": list(s.workloads)}
                    for s in [*main_specs, *variants]},
        "main": [s.name for s in main_specs],
        "variants": [s.name for s in variants],
        "runs": [],
    }
    print(f"bench: {reps} rep(s){' (quick)' if quick else ''}; logs in {logdir}", flush=True)
    t_start = time.monotonic()
    unavailable: set[str] = set()
    for rep in range(1, reps + 1):
        # rotate the order each repetition so no server always runs first
        turn = (rep - 1) % len(main_specs) if main_specs else 0  # BENCH_SERVERS: variants only
        order = main_specs[turn:] + main_specs[:turn]
        for spec in [*order, *variants]:
            if spec.name in unavailable:
                continue
            entry = run_server_rep(spec, workloads, rep, logdir)
            if entry.get("error"):
                unavailable.add(spec.name)  # do not retry a server that cannot start
            doc["runs"].append(entry)
            doc["elapsed_s"] = time.monotonic() - t_start
            out_json.write_text(json.dumps(doc, indent=1))
    md = report.render(doc)
    out_md = out_json.with_suffix(".md")
    out_md.write_text(md)
    print()
    print(md)
    print(f"results: {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
