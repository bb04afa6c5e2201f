"""W1 and W2 against 1 and 2 smtpgate instances behind HAProxy (docs/scaling.md).

Theory of operation. Each topology starts fresh, everything on loopback:

- ``direct``: one instance, no HAProxy, no Redis (the baseline of bench/runner.py);
- ``ha1`` / ``ha2``: HAProxy running contrib/haproxy/haproxy.cfg unchanged (with
  ``ha1`` both of its servers name the same instance), instances with
  ``proxy_protocol = true`` sharing one Redis (``[state] url``) and one SQLite
  user file (``[store] url``);
- ``ha1-pg`` / ``ha2-pg`` (W2 only): the same, the store on a throw-away
  PostgreSQL cluster (initdb in a temporary folder, fsync off), skipped when
  PostgreSQL is not installed.

Every server-side process (instances, HAProxy, Redis, PostgreSQL) is pinned to
CPU 0 and the load generator to CPU 1, as in bench/runner.py, so a second
instance cannot add a core: on this 2-core machine the absolute gain is small by
construction. What the run shows is the cost of the scale-out path: messages or
handshakes per CPU-second of the smtpgate processes, and the share of the
server side's CPU spent in HAProxy, Redis and PostgreSQL (utime+stime of each
process tree from /proc, read before and after each workload).

Standard library only; reuses bench/runner.py's process and /proc helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner  # bench/ is not a package: imported by path

HAPROXY_CFG = runner.REPO / "contrib" / "haproxy" / "haproxy.cfg"
SERVER_CPUS = runner.SERVER_CPUS
PG_USER = "nobody"  # initdb refuses to run as root
PG_TIMEOUT = 60


@dataclass(frozen=True)
class Topology:
    name: str
    instances: int
    haproxy: bool
    store: str  # "sqlite" or "postgresql"
    workloads: tuple[str, ...]


TOPOLOGIES = (
    Topology("direct", 1, False, "sqlite", ("W1", "W2")),
    Topology("ha1", 1, True, "sqlite", ("W1", "W2")),
    Topology("ha2", 2, True, "sqlite", ("W1", "W2")),
    Topology("ha1-pg", 1, True, "postgresql", ("W2",)),
    Topology("ha2-pg", 2, True, "postgresql", ("W2",)),
)


# ---------------------------------------------------------------- processes


def greets_after_proxy_header(port: int) -> bool:
    """An instance with proxy_protocol = true answers 220 after a PROXY v1 header."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            s.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 25\r\n")
            ok = s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Process(runner.Server):
    """runner.Server (own process group, recorded for run.sh) with its own readiness test."""

    def __init__(self, spec: runner.ServerSpec, log: Path, ready: Callable[[int], bool]) -> None:
        super().__init__(spec, log)
        self.ready = ready

    def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.spec.argv]
        argv = ["taskset", "-c", SERVER_CPUS, *argv]
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.spec.env}, start_new_session=True, cwd=runner.BUILD)
        runner._record_pgid(self.proc.pid, add=True)
        deadline = time.monotonic() + runner.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise runner.ServerError(f"{self.spec.name} exited: {self.log_tail()}")
            if self.ready(self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise runner.ServerError(f"{self.spec.name} not ready: {self.log_tail()}")


class PgCluster:
    """A throw-away PostgreSQL cluster (as tests/postgres/cluster.py), pinned to CPU 0."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                       key=lambda p: int(p.parent.parent.name)
                       if p.parent.parent.name.isdigit() else 0)
        if not found:
            raise runner.ServerError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = found[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="smtpgate-bench-pg-"))
        self.port = runner.free_port()
        self.user = PG_USER if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://smtpgate@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(["taskset", "-c", SERVER_CPUS, str(self.bin / argv[0]), *argv[1:]],
                              user=self.user, cwd=self.root, capture_output=True, text=True,
                              timeout=PG_TIMEOUT + 30, check=False,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
        if done.returncode != 0:
            raise runner.ServerError(f"{argv[0]}: {done.stderr.strip()[-300:]}")

    def start(self) -> None:
        data = str(self.root / "data")
        # trust on loopback only: a throw-away cluster that lives for one workload
        self._run("initdb", "-D", data, "-U", "smtpgate", "-E", "UTF8", "--locale=C",
                  "--auth=trust")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   "-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "start", "-w", "-t", str(PG_TIMEOUT), "-D", data,
                  "-l", str(self.root / "server.log"), "-o", options)

    @property
    def pid(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def destroy(self) -> None:
        with contextlib.suppress(runner.ServerError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-w", "-t", "20", "-D", str(self.root / "data"),
                      "-m", "fast")
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- smtpgate instances


def instance_config(data_dir: Path, port: int, store_url: str, redis_url: str | None) -> str:
    """runner.smtpgate_config, behind HAProxy: PROXY header, shared store and state."""
    text = runner.smtpgate_config(data_dir, port, 1, "discard")
    if redis_url is not None:
        text = text.replace('require_auth = true\n', 'require_auth = true\n'
                            'proxy_protocol = true\ntrusted_proxies = ["127.0.0.0/8"]\n')
        text += f'\n[state]\nurl = "{redis_url}"\n'
    return text + f'\n[store]\nurl = "{store_url}"\n'


def add_bench_user(config: Path, env: dict[str, str]) -> None:
    res = subprocess.run([str(runner.smtpgate_bin()), "--config", str(config), "user", "add",
                          runner.USER, "--password-stdin"], input=f"{runner.PASSWORD}\n".encode(),
                         capture_output=True, timeout=60, check=False, env={**os.environ, **env})
    if res.returncode != 0:
        raise runner.ServerError("smtpgate user add: "
                                 + (res.stdout + res.stderr).decode(errors="replace")[-300:])


class Stack:
    """The processes of one topology, started in order and stopped in reverse."""

    def __init__(self, topo: Topology, logdir: Path) -> None:
        self.topo = topo
        self.logdir = logdir
        self.scratch = runner.BUILD / "scratch" / f"scaleout-{topo.name}"
        self.env = runner.snapshot_env()
        self.parts: dict[str, list[Process]] = {"smtpgate": [], "haproxy": [], "redis": []}
        self.pg: PgCluster | None = None
        self.front = 0

    def _process(self, kind: str, name: str, argv: list[str], port: int, *,
                 ready: Callable[[int], bool], env: dict[str, str] | None = None) -> Process:
        spec = runner.ServerSpec(name, argv, port, SERVER_CPUS, (), env=env or {})
        proc = Process(spec, self.logdir / f"{name}.log", ready)
        self.parts[kind].append(proc)
        proc.start()
        return proc

    def start(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        redis_url = None
        if self.topo.haproxy:
            port = runner.free_port()
            self._process("redis", f"{self.topo.name}-redis",
                          ["redis-server", "--bind", "127.0.0.1", "--port", "{port}", "--save",
                           "", "--appendonly", "no", "--dir", str(self.scratch)],
                          port, ready=redis_answers)
            redis_url = f"redis://127.0.0.1:{port}/0"
        store = f"sqlite:///{self.scratch}/users.db"
        if self.topo.store == "postgresql":
            self.pg = PgCluster()
            self.pg.start()
            store = self.pg.url
        ports = [runner.free_port() for _ in range(self.topo.instances)]
        for index, port in enumerate(ports):
            config = self.scratch / f"smtpgate-{index}.toml"
            (self.scratch / f"data-{index}").mkdir()
            config.write_text(instance_config(self.scratch / f"data-{index}", port, store,
                                              redis_url))
            if index == 0:
                add_bench_user(config, self.env)
            ready = greets_after_proxy_header if self.topo.haproxy else runner.probe
            self._process("smtpgate", f"{self.topo.name}-smtpgate-{index}",
                          [str(runner.smtpgate_bin()), "--config", str(config), "serve"],
                          port, ready=ready, env=self.env)
        self.front = ports[0]
        if self.topo.haproxy:
            self.front = runner.free_port()
            env = {"SMTPGATE_FRONTEND": f"127.0.0.1:{self.front}",
                   "SMTPGATE_A": f"127.0.0.1:{ports[0]}",
                   "SMTPGATE_B": f"127.0.0.1:{ports[-1]}"}  # ha1: both name the one instance
            self._process("haproxy", f"{self.topo.name}-haproxy",
                          ["haproxy", "-db", "-f", str(HAPROXY_CFG)], self.front,
                          ready=runner.probe, env=env)
            time.sleep(2.5)  # let HAProxy's first health checks mark both servers up

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each kind of process (whole trees)."""
        out = {kind: sum(runner.tree_cpu(p.pid) for p in procs if p.alive())
               for kind, procs in self.parts.items()}
        out["postgresql"] = runner.tree_cpu(self.pg.pid) if self.pg else 0.0
        return out

    def stop(self) -> None:
        for kind in ("haproxy", "smtpgate", "redis"):
            for proc in reversed(self.parts[kind]):
                proc.stop()
        if self.pg is not None:
            self.pg.destroy()


# ---------------------------------------------------------------- measuring


@dataclass
class Front:
    """What runner.run_loadgen needs of a server: where to connect and a pid."""

    port: int
    pid: int


def measure(stack: Stack, wl: runner.Workload) -> dict[str, Any]:
    front_pid = stack.parts["haproxy" if stack.topo.haproxy else "smtpgate"][0].pid
    cpu0 = stack.cpu()
    rec = runner.run_loadgen(wl, Front(stack.front, front_pid))  # type: ignore[arg-type]
    cpu1 = stack.cpu()
    rec["cpu_s"] = {kind: cpu1[kind] - cpu0[kind] for kind in cpu0}
    lg = rec.get("loadgen") or {}
    count = lg.get("messages" if wl.name == "W1" else "handshakes", 0)
    total = sum(rec["cpu_s"].values())
    gate = rec["cpu_s"]["smtpgate"]
    rec["count"] = count
    rec["wall_rate"] = count / lg["wall_s"] if lg.get("wall_s") else None
    rec["per_smtpgate_cpu_s"] = count / gate if gate > 0 else None
    rec["per_server_side_cpu_s"] = count / total if total > 0 else None
    rec["share"] = {kind: (v / total if total > 0 else 0.0) for kind, v in rec["cpu_s"].items()}
    return rec


def run_topology(topo: Topology, workloads: dict[str, runner.Workload],
                 logdir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"topology": topo.name, "results": {}}
    stack = Stack(topo, logdir)
    try:
        stack.start()
        for name in topo.workloads:
            print(f"scaleout: {topo.name} {name}", flush=True)
            entry["results"][name] = measure(stack, workloads[name])
    except (runner.ServerError, OSError, subprocess.SubprocessError) as exc:
        entry["error"] = str(exc)[-500:]
        print(f"scaleout: {topo.name}: {entry['error']}", flush=True)
    finally:
        stack.stop()
    return entry


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def render(doc: dict[str, Any]) -> str:
    lines = ["| topology | workload | wall /s | per smtpgate CPU-s | per server-side CPU-s "
             "| smtpgate | HAProxy | Redis | PostgreSQL |", "|---|---|---:|---:|---:|---:|---:|"
             "---:|---:|"]
    for entry in doc["runs"]:
        if entry.get("error"):
            lines.append(f"| {entry['topology']} | error: {entry['error'][:80]} |||||||| ")
        for name, rec in entry["results"].items():
            if rec.get("error"):
                lines.append(f"| {entry['topology']} | {name} | error: {rec['error'][:80]} "
                             "||||||| ")
                continue
            share = rec["share"]
            lines.append(
                f"| {entry['topology']} | {name} | {fmt(rec['wall_rate'])} "
                f"| {fmt(rec['per_smtpgate_cpu_s'])} | {fmt(rec['per_server_side_cpu_s'])} "
                + " ".join(f"| {share[k]:.0%}" for k in ("smtpgate", "haproxy", "redis",
                                                          "postgresql")) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = os.environ.get("BENCH_QUICK") == "1"
    for tool in ("haproxy", "redis-server", "taskset"):
        if shutil.which(tool) is None:
            print(f"scaleout: {tool} is required (Debian packages haproxy, redis-server)",
                  file=sys.stderr)
            return 1
    runner.snapshot_src()
    workloads = runner.make_workloads(quick)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = runner.BUILD / "logs" / f"scaleout-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    runner.RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = runner.RESULTS / f"scaleout-{stamp}.json"
    doc: dict[str, Any] = {"machine": runner.machine_info(), "quick": quick,
                           "workloads": {k: workloads[k].title for k in ("W1", "W2")},
                           "runs": []}
    print(f"scaleout: W1/W2 behind HAProxy; logs in {logdir}", flush=True)
    for topo in TOPOLOGIES:
        doc["runs"].append(run_topology(topo, workloads, logdir))
        out_json.write_text(json.dumps(doc, indent=1))
    md = render(doc)
    out_json.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"results: {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
