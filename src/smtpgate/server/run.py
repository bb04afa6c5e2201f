"""``smtpgate serve``: logging, signals, worker processes.

With ``[server] workers = N`` (0: one per core) the parent forks N workers
that each bind every listener with SO_REUSEPORT, so the kernel spreads
connections over them; the parent forwards SIGTERM/SIGINT and waits. With one
worker everything runs in this process. Each worker stops gracefully: it
stops accepting, answers idle clients 421 4.3.2, lets DATA finish within
``SHUTDOWN_GRACE`` seconds, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from smtpgate.config.schema import Config
from smtpgate.server.app import SHUTDOWN_GRACE, Server
from smtpgate.server.certs import ensure_self_signed
from smtpgate.server.throttle_db import SqliteThrottleState

log = logging.getLogger("smtpgate")


def setup_logging() -> None:
    level = os.environ.get("SMTPGATE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def worker_count(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def serve(config: Config) -> int:
    setup_logging()
    if any(lst.tls != "none" for lst in config.listeners):
        ensure_self_signed(config.tls.cert, config.tls.key, config.hostname)  # before forking
    workers = worker_count(config)
    if workers == 1:
        return _run_worker(config, reuse_port=False)
    return _run_workers(config, workers)


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner when the optional extra ``smtpgate[uvloop]`` is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    log.info("using uvloop")
    return uvloop.run


def _run_worker(config: Config, *, reuse_port: bool) -> int:
    try:
        return event_loop_runner()(_serve_until_signal(config, reuse_port))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1


async def _serve_until_signal(config: Config, reuse_port: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Workers share failure windows through a file; one process keeps them in memory.
    state = SqliteThrottleState(config.data_dir / "throttle.db") if reuse_port else None
    server = Server(config, reuse_port=reuse_port, throttle_state=state)
    await server.start()
    await stop.wait()
    log.info("stopping: no new connections, %d open", len(server.connections))
    await server.stop(grace=SHUTDOWN_GRACE)
    if state is not None:
        state.close()
    log.info("stopped")
    return 0


def _run_workers(config: Config, workers: int) -> int:
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _run_worker(config, reuse_port=True)
            finally:
                os._exit(code)
        children.append(pid)
    log.info("started %d workers: %s", workers, " ".join(map(str, children)))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(code) != 0:
            status = 1
            forward(signal.SIGTERM, None)  # one worker failed: stop the others
    return status
