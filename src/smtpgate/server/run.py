"""``smtpgate serve``: logging, start-up checks, signals, worker processes.

Theory of operation
-------------------
``serve`` runs the start-up checks of ``server/preflight.py`` first, in this
process: whatever the number of workers, a bad certificate, a ``data_dir``
that is a file or a port in use is one ``cannot start: ...`` line and exit
status 1.

With ``[server] workers = 1`` everything runs in this process. With N > 1 the
supervisor creates the shared connection table (``server/admission.py``),
then forks N workers that each bind every listener with SO_REUSEPORT, so the
kernel spreads connections over them; workers share failed-login windows
through ``<data_dir>/throttle.db``. Worker 0 alone serves ``[admin] address``
(login sessions live in its memory; the AUTH events and failure windows it
shows are in files every worker writes). The supervisor forwards SIGTERM/SIGINT
and waits. When a worker dies (a crash, the OOM killer) the supervisor frees
its connection slots at once and starts a new worker in its place; a worker
that fails while starting stops the whole server. Each worker stops
gracefully: it stops accepting, answers idle clients 421 4.3.2, lets DATA
finish within ``SHUTDOWN_GRACE`` seconds, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from smtpgate.config.schema import Config
from smtpgate.server.admission import Admission, ConnectionTable
from smtpgate.server.app import SHUTDOWN_GRACE, Server
from smtpgate.server.certs import CertificateError
from smtpgate.server.preflight import StartupError, prepare
from smtpgate.server.throttle_db import SqliteThrottleState
from smtpgate.server.tls import TlsConfigError

log = logging.getLogger("smtpgate")
EXIT_STARTUP = 3  # a worker could not start: the supervisor stops everything
RESPAWN_DELAY = 1.0  # seconds between two starts of one worker slot
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    try:
        prepare(config)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    workers = worker_count(config)
    if workers == 1:
        return 0 if run_worker(config, None) == 0 else 1
    return Supervisor(config, workers).run()


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner when the optional extra ``smtpgate[uvloop]`` is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    log.info("using uvloop")
    return uvloop.run


def run_worker(config: Config, admission: Admission | None, serve_admin: bool = True) -> int:
    """Serve until SIGTERM/SIGINT; ``admission`` is the shared table's view in a worker."""
    try:
        return event_loop_runner()(_serve_until_signal(config, admission, serve_admin))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP


async def _serve_until_signal(
    config: Config, admission: Admission | None, serve_admin: bool
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    shared = admission is not None
    state: SqliteThrottleState | None = None
    try:
        # Workers share failure windows through a file; one process keeps them in memory.
        state = SqliteThrottleState(config.data_dir / "throttle.db") if shared else None
        server = Server(
            config, reuse_port=shared, throttle_state=state, admission=admission,
            serve_admin=serve_admin,
        )
        await _start(server)
    except (OSError, ValueError, CertificateError, TlsConfigError) as exc:
        raise StartupError(" ".join(str(exc).split()) or type(exc).__name__) from None
    await stop.wait()
    log.info("stopping: no new connections, %d open", len(server.connections))
    await server.stop(grace=SHUTDOWN_GRACE)
    if state is not None:
        state.close()
    log.info("stopped")
    return 0


async def _start(server: Server) -> None:
    try:
        await server.start()
    except BaseException:
        await server.stop(grace=0)  # close what was opened before the failure
        raise


class Supervisor:
    """Forks the workers, restarts one that dies, frees its connection slots."""

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        limits = config.limits
        self.table = ConnectionTable(
            workers, limits.max_connections, limits.max_connections_per_ip
        )
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when its process started
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._stop)
        for index in range(self.workers):
            self._spawn(index)
        log.info("started %d workers: %s", self.workers, " ".join(map(str, self.children)))
        while self.children:
            pid, wait_status = os.wait()
            index = self.children.pop(pid, -1)
            if index >= 0:
                self.table.forget_worker(index)  # its connections are gone with it
                self._reap(index, pid, os.waitstatus_to_exitcode(wait_status))
        self.table.close()
        return self.status

    def _reap(self, index: int, pid: int, code: int) -> None:
        if self.stopping:
            self.status |= code not in (0, -signal.SIGTERM, -signal.SIGINT)
            return
        if code == EXIT_STARTUP:
            self.status = 1
            self._stop(signal.SIGTERM, None)  # one worker cannot start: stop the others
            return
        log.error("worker %d (pid %d) ended with status %d; starting a new one", index, pid, code)
        time.sleep(max(0.0, self.started[index] + RESPAWN_DELAY - time.monotonic()))
        if not self.stopping:
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        # Signals wait until the child is registered, so none is lost in between.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._child(index)
            self.children[pid] = index
            self.started[index] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _child(self, index: int) -> None:
        code = 1
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # the worker's event loop installs its own
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            # Worker 0 alone serves [admin] address: its sessions live in its memory.
            code = run_worker(self.config, self.table.worker(index), serve_admin=index == 0)
        finally:
            os._exit(code)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
