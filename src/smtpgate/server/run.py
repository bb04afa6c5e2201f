"""``smtpgate serve``: logging, start-up checks, signals, worker processes.

Theory of operation
-------------------
``serve`` runs the start-up checks of ``server/preflight.py`` first, in a
short-lived forked child (they load pyOpenSSL and cryptography, which this
process does not keep): whatever the number of workers, a bad certificate, a
``data_dir`` that is a file or a port in use is one ``cannot start: ...``
line and exit status 1.

With ``[server] workers = 1`` everything runs in this process. With N > 1 the
supervisor creates the shared connection table (``server/admission.py``),
then forks N workers that each bind every listener with SO_REUSEPORT, so the
kernel spreads connections over them; workers share failed-login windows
through ``<data_dir>/throttle.db`` (with ``[state] url`` each worker also
talks to Redis, and the file is its fallback: docs/scaling.md). Worker 0
alone serves ``[admin] address`` (login sessions live in its memory; the AUTH
events and failure windows it shows are in files every worker writes). The
supervisor forwards SIGTERM/SIGINT and waits. When a worker dies (a crash,
the OOM killer) the supervisor frees its connection slots at once and starts
a new worker in its place; a worker that fails while starting stops the
whole server. The supervisor imports only the configuration, the log set-up
and the connection table; each worker imports the server after the fork, and
loads TLS with its first TLS connection (the checks loaded the pair already;
docs/performance.md, "Lean processes"). Each worker runs on
``[server] loop`` (uvloop when installed, by default). Each worker stops
gracefully: it stops accepting, answers idle clients 421 4.3.2, lets DATA
finish within ``SHUTDOWN_GRACE`` seconds, then exits 0.

Operations (docs/operations.md): logs go to standard error in the
``[log] format`` (``ops/logs.py``); a worker hands its records to a thread
that formats and writes them, and drains it before it exits. Metrics are on
only with ``[admin] address`` (their one reader); with several workers they
use prometheus-client's multiprocess mode in ``<data_dir>/metrics``, emptied
at start; the supervisor marks a dead worker's files (``ops/metrics.py``).
SIGHUP, sent to the supervisor, is forwarded to every worker; each process
reads the configuration file again, applies the log settings and the TLS
pair to new connections (a pair that does not load is refused with a log
line and the running one kept) and names the changed keys that need a
restart (``ops/reload.py``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpgate.config.load import ConfigError, load_config
from smtpgate.config.schema import Config
from smtpgate.ops import logs, metrics
from smtpgate.ops.reload import restart_needed
from smtpgate.server.admission import ConnectionTable

# The supervisor imports only what it needs before it forks: the configuration, the log
# set-up and the shared connection table (this module's imports). The server itself
# (asyncio, pyOpenSSL, argon2, SQLite...) is imported by each worker after the fork, and
# the start-up checks run in a short-lived child (``_prepare``): every page imported here
# is resident in the supervisor and again in every worker (docs/performance.md,
# "Lean processes").
if TYPE_CHECKING:
    from smtpgate.server.admission import Admission
    from smtpgate.server.app import Server

log = logging.getLogger("smtpgate")
EXIT_STARTUP = 3  # a worker could not start: the supervisor stops everything
RESPAWN_DELAY = 1.0  # seconds between two starts of one worker slot
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HELD_SIGNALS = (*_STOP_SIGNALS, signal.SIGHUP)  # blocked while a worker is forked


def setup_logging(config: Config, *, names: bool = True, threaded: bool | None = None) -> None:
    """Standard error in ``[log] format``; ``names``: False until data_dir holds the key.
    ``threaded``: format and write in a thread (a worker's event loop must not wait for
    its log lines); None keeps what this process had."""
    level = os.environ.get("SMTPGATE_LOG_LEVEL", "INFO").upper()
    user_names = config.log.user_names if names else "omit"
    logs.configure(config.log.format, user_names, config.data_dir, stream=sys.stderr,
                   level=getattr(logging, level, logging.INFO), threaded=threaded)


def worker_count(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def serve(config: Config, source: Path | None = None) -> int:
    """``source``: the configuration file, read again on SIGHUP (None: built-in defaults)."""
    setup_logging(config, names=False)
    workers = worker_count(config)
    problem = _prepare(config)
    if problem is not None:
        log.error("cannot start: %s", problem)
        return 1
    setup_logging(config)
    # Metrics are read only through the admin listener's /metrics: without it, counting
    # would only cost time and the memory of prometheus-client (ops/metrics.py).
    if not config.admin.address:
        metrics.disable()
    elif workers > 1:
        metrics.enable_multiprocess(config.data_dir / "metrics")
    if workers == 1:
        return 0 if run_worker(config, None, source) == 0 else 1
    gc.collect()  # what start-up left behind (the CLI's parser) is not copied into workers
    return Supervisor(config, workers, source).run()


def _prepare(config: Config) -> str | None:
    """The start-up checks (``server/preflight.py``): why they failed, or None.

    They run in a forked child that exits afterwards. They load pyOpenSSL and
    cryptography (the certificate, the self-signed pair), which the supervisor never
    needs and a worker needs only once a client starts TLS; a module once imported stays
    resident for the life of the process.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.write(write, (_prepare_here(config) or "").encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 and not answer:
        return f"the start-up checks ended with status {os.waitstatus_to_exitcode(status)}"
    return answer or None


def _prepare_here(config: Config) -> str | None:
    from smtpgate.server.preflight import StartupError, prepare

    try:
        prepare(config)
    except (StartupError, OSError) as exc:
        return str(exc)
    except Exception as exc:  # the child must answer: its traceback would be lost
        return f"{type(exc).__name__}: {exc}"
    return None


def reload_config(source: Path | None, running: Config) -> Config | None:
    """SIGHUP: read the file again and apply its log settings. The result is ``running``
    with the reloadable keys (``ops/reload.py``) of the file; None if the file is bad."""
    try:
        new = load_config(source, environ={}) if source is not None else running
        setup_logging(new)
    except (ConfigError, OSError, ValueError) as exc:
        log.error("reload refused: %s; the running configuration stays", exc)
        return None
    changed = restart_needed(running, new)
    if changed:
        log.warning("reload: changed keys need a restart: %s", ", ".join(changed))
    return replace(running, tls=new.tls, log=new.log)


def reload_worker(server: Server, source: Path | None) -> None:
    """SIGHUP in a worker: new log settings, a new TLS pair for new connections."""
    from smtpgate.server.tls_base import TlsConfigError

    new = reload_config(source, server.config)
    if new is None:
        return
    try:
        server.reload_tls(new.tls)
    except (TlsConfigError, OSError) as exc:
        log.error("reload: TLS pair refused, the running one stays: %s", exc)
        return
    server.config = new
    log.info("reloaded: TLS certificate and key, log settings")


def event_loop_runner(loop: str = "auto") -> Callable[[Coroutine[Any, Any, int]], int]:
    """The runner of ``[server] loop``: uvloop's for "uvloop", and for "auto" when it is
    installed (a default dependency on Linux); asyncio's own for "asyncio"."""
    import asyncio

    if loop == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            log.warning("[server] loop = \"uvloop\" but uvloop is not installed: using asyncio")
        return asyncio.run
    log.info("using uvloop")
    return uvloop.run


def run_worker(
    config: Config, admission: Admission | None, source: Path | None = None,
    serve_admin: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT; ``admission`` is the shared table's view in a worker."""
    from smtpgate.server.preflight import StartupError

    setup_logging(config, threaded=True)  # log lines leave the event loop (ops/logs.py)
    try:
        runner = event_loop_runner(config.server.loop)
        return runner(_serve_until_signal(config, admission, source, serve_admin))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP
    finally:
        logs.stop_thread()  # every line written before the process exits


GC_YOUNGEST = 20_000  # allocations between collections of the youngest generation (700)


def settle_garbage_collector() -> None:
    """Once started: move what exists now (modules, configuration, the store) out of the
    cyclic collector's reach (``gc.freeze``), and collect the youngest generation less
    often. Each message allocates short-lived containers that plain reference counting
    frees; with the defaults, collections that walked the whole start-up heap again and
    again took about a tenth of W1's CPU (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST, middle, oldest)
    _return_free_memory()


def _return_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc ``malloc_trim``): start-up
    (imports, the configuration, TLS contexts) leaves freed blocks that would otherwise
    stay resident for the worker's whole life. Elsewhere, or without glibc: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc (musl)
        ctypes.CDLL(None).malloc_trim(0)


async def _serve_until_signal(
    config: Config, admission: Admission | None, source: Path | None, serve_admin: bool
) -> int:
    import asyncio

    from smtpgate.server.app import SHUTDOWN_GRACE, Server
    from smtpgate.server.certs import CertificateError
    from smtpgate.server.preflight import StartupError
    from smtpgate.server.throttle_db import SqliteThrottleState
    from smtpgate.server.tls_base import TlsConfigError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    shared = admission is not None
    state: SqliteThrottleState | None = None
    try:
        # Workers share failure windows through a file; one process keeps them in memory.
        state = SqliteThrottleState(config.data_dir / "throttle.db") if shared else None
        # The start-up checks loaded the pair already: a worker loads TLS (pyOpenSSL,
        # ~15 MiB resident) with its first TLS connection (server/tls_base.py).
        server = Server(
            config, reuse_port=shared, throttle_state=state, admission=admission,
            serve_admin=serve_admin, tls_at_start=False,
        )
        await _start(server)
    except (OSError, ValueError, CertificateError, TlsConfigError) as exc:
        raise StartupError(" ".join(str(exc).split()) or type(exc).__name__) from None
    loop.add_signal_handler(signal.SIGHUP, reload_worker, server, source)
    settle_garbage_collector()
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

    def __init__(self, config: Config, workers: int, source: Path | None = None) -> None:
        self.config = config
        self.source = source
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
        signal.signal(signal.SIGHUP, self._reload)
        for index in range(self.workers):
            self._spawn(index)
        log.info("started %d workers: %s", self.workers, " ".join(map(str, self.children)))
        while self.children:
            pid, wait_status = os.wait()
            index = self.children.pop(pid, -1)
            if index >= 0:
                self.table.forget_worker(index)  # its connections are gone with it
                metrics.mark_dead(pid)  # ... and its open sessions
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
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._child(index)
            self.children[pid] = index
            self.started[index] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)

    def _child(self, index: int) -> None:
        code = 1
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # the worker's event loop installs its own
            # A SIGHUP before the worker listens has nothing to reload: it starts afresh.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
            # Worker 0 alone serves [admin] address: its sessions live in its memory.
            code = run_worker(
                self.config, self.table.worker(index), self.source, serve_admin=index == 0
            )
        finally:
            os._exit(code)

    def _reload(self, signum: int, _frame: object) -> None:
        """SIGHUP: our own log settings, then every worker reloads itself."""
        new = reload_config(self.source, self.config)
        if new is not None:
            self.config = new  # for workers started from now on
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGHUP)
        log.info("reload: SIGHUP sent to %d workers", len(self.children))

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
