"""The Python side of W1 and W2 alone: a real ``Connection`` fed the load generator's
client lines through a fake transport, in one process (no sockets, no event-loop I/O).

    .venv/bin/python bench/inproc.py [W1|W2] [--profile]

Prints CPU microseconds per message (W1) or per handshake (W2). Log lines are formatted
by the logging thread to /dev/null, as in a worker. Environment: INPROC_N (messages or
handshakes measured), INPROC_MODE (delivery mode, discard by default), INPROC_LEVEL
(log level, 20 = INFO as served), INPROC_LOG (a file
for the lines instead of /dev/null), INPROC_THREAD=0 (log without the thread).
``--profile`` adds cProfile's top functions (it sees no frames of the modules mypyc
compiled: ``SMTPGATE_NO_MYPYC=1`` profiles their source, or use py-spy ``--native``).
Complements ``make bench`` (which adds the kernel's share) when trimming the per-command
path: the figure moves with code only.
"""

from __future__ import annotations

import sys

BENCH_DIR = sys.path.pop(0)  # bench/: its profile.py would shadow the standard library's

import asyncio
import base64
import cProfile
import os
import pstats
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from smtpgate.config.load import load_config
from smtpgate.ops import logs, metrics
from smtpgate.server.app import Server
from smtpgate.server.connection import Connection
from smtpgate.server.run import settle_garbage_collector

REPO = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench", "bench-password"
BODY = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 130 + b".\r\n"  # ~10 KiB
CONTEXT: list[Any] = []
AUTH = b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n"


class Transport(asyncio.Transport):
    """Takes the replies; the ``Connection`` never waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def settle(conn: Connection) -> None:
    """Let a slow step (an AUTH task, a group commit) finish."""
    while conn.task is not None:
        await asyncio.sleep(0)


async def w1(server: Server, messages: int) -> float:
    conn = open_connection(server)
    for line in (b"EHLO bench\r\n", AUTH):
        conn.data_received(line)
        await settle(conn)
    start = time.process_time()
    for _ in range(messages):
        for chunk in (b"MAIL FROM:<bench@example.org>\r\n", b"RCPT TO:<rcpt@example.org>\r\n",
                      b"DATA\r\n", BODY[:4096], BODY[4096:]):
            conn.data_received(chunk)
            if conn.task is not None:
                await settle(conn)
    return (time.process_time() - start) / messages


async def w2(server: Server, handshakes: int) -> float:
    start = time.process_time()
    for _ in range(handshakes):
        conn = open_connection(server)
        for line in (b"EHLO bench\r\n", AUTH, b"QUIT\r\n"):
            conn.data_received(line)
            await settle(conn)
        conn.connection_lost(None)
    return (time.process_time() - start) / handshakes


def open_connection(server: Server) -> Connection:
    conn = Connection(CONTEXT[0], server.config.listeners[0], server.connections)
    conn.connection_made(Transport())
    return conn


def make_server(config: Any) -> Server:
    """As one worker of ``workers = 1`` serves, or with INPROC_SHARED=1 as one of several
    (the shared connection table and throttle.db, as server/run.py gives a worker)."""
    if os.environ.get("INPROC_SHARED") != "1":
        return Server(config)
    from smtpgate.server.admission import ConnectionTable
    from smtpgate.server.throttle_db import SqliteThrottleState

    lim = config.limits
    table = ConnectionTable(2, lim.max_connections, lim.max_connections_per_ip)
    state = SqliteThrottleState(config.data_dir / "throttle.db")
    return Server(config, reuse_port=True, throttle_state=state, admission=table.worker(0))


def make_config(scratch: Path) -> Path:
    sys.path.append(BENCH_DIR)
    import runner

    cfg = scratch / "smtpgate.toml"
    (scratch / "data").mkdir()
    mode = os.environ.get("INPROC_MODE", "discard")  # or maildir: durable, group commit
    cfg.write_text(runner.smtpgate_config(scratch / "data", 1, 1, mode))
    subprocess.run([str(REPO / ".venv/bin/smtpgate"), "--config", str(cfg), "user", "add",
                    USER, "--password-stdin"], input=f"{PASSWORD}\n".encode(), check=True,
                   capture_output=True)
    return cfg


async def main(workload: str, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(make_config(Path(tmp)))
        with open(os.environ.get("INPROC_LOG", "/dev/null"), "w") as devnull:
            logs.configure(config.log.format, config.log.user_names, config.data_dir,
                           stream=devnull, threaded=os.environ.get("INPROC_THREAD", "1") == "1",
                           level=int(os.environ.get("INPROC_LEVEL", "20")))
            metrics.disable()
            server = make_server(config)
            CONTEXT.append(server.context())  # one per server, as Server.start makes it
            run = w1 if workload == "W1" else w2
            await run(server, 200)  # warm: caches, the verified-password cache
            settle_garbage_collector()
            prof = cProfile.Profile() if profile else None
            if prof is not None:
                prof.enable()
            default = "5000" if workload == "W1" else "2000"
            per = await run(server, int(os.environ.get("INPROC_N", default)))
            if prof is not None:
                prof.disable()
            logs.stop_thread()
    unit = "message" if workload == "W1" else "handshake"
    print(f"{workload}: {per * 1e6:.1f} CPU-us per {unit} (Python side, this process)")
    if prof is not None:
        top = int(os.environ.get("INPROC_TOP", "30"))
        pstats.Stats(prof).sort_stats(os.environ.get("INPROC_SORT", "tottime")).print_stats(top)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1] if len(sys.argv) > 1 else "W1", "--profile" in sys.argv))
