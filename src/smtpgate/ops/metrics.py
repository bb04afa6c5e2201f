"""Prometheus metrics: what ``/metrics`` on the admin listener serves.

Theory of operation
-------------------
Counters, gauges and histograms are prometheus-client objects held by one
``Metrics`` instance per process (``get()``). Code on the hot path never
looks a label up per event: a connection binds its listener's children once
(``Metrics.listener``), and the few labelled families whose values appear
later (AUTH reply codes, message reply codes) cache their children in plain
dicts keyed by values that already exist (an ``int`` code, a mechanism
string), so a lookup allocates nothing.

Workers: prometheus-client's multiprocess mode. ``serve`` calls
``enable_multiprocess(<data_dir>/metrics)`` before it forks: the directory is
emptied (counters of an earlier run must not be summed in), and every
worker then writes its values to its own memory-mapped file there (switched
on by its first ``get()``; the supervisor counts nothing and never imports
prometheus-client). When a
worker dies, the supervisor calls ``mark_dead(pid)``: its open-session and
TLS gauges (``livesum``) stop counting, while its counters stay in the sums,
so totals never go backwards. ``render`` reads every file, from any process:
the admin listener (in worker 0) sees the sums of all workers. We chose this
over one registry per worker summed by the supervisor because it needs no IPC
of our own and survives a worker's crash. Without
``enable_multiprocess`` (one process, the embedded library) values live in
memory and ``render`` serves this process's registry.

Off: ``smtpgate serve`` without ``[admin] address`` has no ``/metrics`` to serve,
so it calls ``disable()`` and every process counts into ``NullMetrics``, whose
methods do nothing; prometheus-client (several megabytes resident per process)
is then never imported. It is imported on the first real use only
(``_prometheus``): a ``Metrics``, ``render`` or the multiprocess calls.

The relay queue feeds ``queue_state(depth, oldest_age)`` after each scan of
the queue and ``delivery(result)`` once per delivery attempt; see
docs/operations.md for every metric.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:  # prometheus-client is imported on first use (_prometheus): see below
    from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["Gauge", "ListenerMetrics", "Metrics", "disable", "enable_multiprocess", "get",
           "mark_dead", "render"]

# Names that may appear as the mechanism label; anything else a client sends is "other".
KNOWN_MECHANISMS = frozenset({
    "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS",
})
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
DELIVERY_RESULTS = ("delivered", "deferred", "bounced")
DeliveryResult = Literal["delivered", "deferred", "bounced"]
# Seconds: AUTH includes Argon2 (~0.1-0.5 s) and the failure delay (2 s by default).
AUTH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DATA_END_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
MAX_CACHED_CODES = 64  # reply codes are 3 digits from our own catalogue; bound it anyway


def _prometheus() -> Any:
    """prometheus_client, imported and set up on first use."""
    import prometheus_client

    if not _Process.prometheus_ready:
        # No *_created series: multiprocess mode has none either.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        _Process.prometheus_ready = True
    return prometheus_client


class ListenerMetrics:
    """The children of one listener, bound once: a connection only calls inc/dec."""

    def __init__(self, open_: Gauge, total: Counter) -> None:
        self.open = open_
        self.total = total


class Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        _prometheus()
        from prometheus_client import Counter, Gauge, Histogram

        r = registry
        self.registry = registry
        self.sessions_open = Gauge(
            "smtpgate_sessions_open", "SMTP sessions open now", ["listener"],
            registry=r, multiprocess_mode="livesum")
        self.sessions_total = Counter(
            "smtpgate_sessions", "SMTP sessions admitted", ["listener"], registry=r)
        self.auth_attempts = Counter(
            "smtpgate_auth_attempts", "AUTH exchanges by mechanism and final reply code",
            ["mechanism", "reply"], registry=r)
        self.auth_blocks = Counter(
            "smtpgate_auth_blocks", "AUTH refused by the failed-login throttle (454 4.7.0)",
            ["scope"], registry=r)
        self.auth_seconds = Histogram(
            "smtpgate_auth_duration_seconds",
            "Server time of the final AUTH step, from the client's line to the reply",
            ["result"], registry=r, buckets=AUTH_BUCKETS)
        self.messages_accepted = Counter(
            "smtpgate_messages_accepted", "Messages answered 250 at the end of DATA/BDAT",
            registry=r)
        self.messages_rejected = Counter(
            "smtpgate_messages_rejected", "Messages refused at the end of DATA/BDAT",
            ["reply"], registry=r)
        self.message_bytes = Counter(
            "smtpgate_message_bytes", "Body bytes of accepted messages", registry=r)
        self.data_end_seconds = Histogram(
            "smtpgate_data_end_duration_seconds",
            "From the end of DATA/BDAT to the reply (commit to the delivery target)",
            registry=r, buckets=DATA_END_BUCKETS)
        self.tls_open = Gauge(
            "smtpgate_tls_sessions_open", "TLS sessions open now by protocol version",
            ["version"], registry=r, multiprocess_mode="livesum")
        self.queue_depth = Gauge(
            "smtpgate_queue_depth", "Messages waiting in the relay queue",
            registry=r, multiprocess_mode="livemostrecent")
        self.queue_oldest = Gauge(
            "smtpgate_queue_oldest_age_seconds", "Age of the oldest message in the relay queue",
            registry=r, multiprocess_mode="livemostrecent")
        self.deliveries = Counter(
            "smtpgate_deliveries", "Relay delivery attempts by result", ["result"], registry=r)
        # Pre-bound children.
        self.auth_ok = self.auth_seconds.labels("ok")
        self.auth_failed = self.auth_seconds.labels("failed")
        self.blocks = {s: self.auth_blocks.labels(s) for s in ("ip", "login")}
        self.tls = {v: self.tls_open.labels(v) for v in TLS_VERSIONS}
        self.delivery_results = {d: self.deliveries.labels(d) for d in DELIVERY_RESULTS}
        self._listeners: dict[str, ListenerMetrics] = {}
        self._auth: dict[str, dict[int, Counter]] = {}
        self._rejected: dict[int, Counter] = {}

    # -- what the server calls ---------------------------------------------------
    def listener(self, address: str) -> ListenerMetrics:
        bound = self._listeners.get(address)
        if bound is None:
            bound = self._listeners[address] = ListenerMetrics(
                self.sessions_open.labels(address), self.sessions_total.labels(address))
        return bound

    def auth(self, mechanism: str, code: int, seconds: float) -> None:
        """One AUTH exchange ended with reply ``code`` after ``seconds`` of server time."""
        name = mechanism if mechanism in KNOWN_MECHANISMS else "other"
        by_code = self._auth.get(name)
        if by_code is None:
            by_code = self._auth[name] = {}
        child = by_code.get(code)
        if child is None:
            child = by_code[code] = self.auth_attempts.labels(name, str(code))
        child.inc()
        (self.auth_ok if code == 235 else self.auth_failed).observe(seconds)

    def blocked(self, scope: Literal["ip", "login"]) -> None:
        self.blocks[scope].inc()

    def message(self, code: int, size: int, seconds: float) -> None:
        """A message answered ``code`` at the end of DATA, ``seconds`` after its end."""
        self.data_end_seconds.observe(seconds)
        if code == 250:
            self.messages_accepted.inc()
            self.message_bytes.inc(size)
            return
        child = self._rejected.get(code)
        if child is None:
            child = self.messages_rejected.labels(str(code))
            if len(self._rejected) < MAX_CACHED_CODES:
                self._rejected[code] = child
        child.inc()

    def tls_gauge(self, version: str) -> Gauge | None:
        """The open-sessions gauge of a TLS ``version`` (None for one we do not count)."""
        return self.tls.get(version)

    # -- what the relay queue calls ------------------------------------------------
    def queue_state(self, depth: int, oldest_age: float) -> None:
        self.queue_depth.set(depth)
        self.queue_oldest.set(oldest_age)

    def delivery(self, result: DeliveryResult) -> None:
        self.delivery_results[result].inc()


class _Nothing:
    """A metric child that counts nothing (``NullMetrics``)."""

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass


class NullMetrics(Metrics):
    """Metrics switched off (``disable``): every call does nothing, nothing is imported."""

    def __init__(self) -> None:  # no prometheus-client: no super().__init__()
        nothing = _Nothing()
        self.registry = None
        self._listener = ListenerMetrics(cast("Gauge", nothing), cast("Counter", nothing))

    def listener(self, address: str) -> ListenerMetrics:
        return self._listener

    def auth(self, mechanism: str, code: int, seconds: float) -> None:
        pass

    def blocked(self, scope: Literal["ip", "login"]) -> None:
        pass

    def message(self, code: int, size: int, seconds: float) -> None:
        pass

    def tls_gauge(self, version: str) -> Gauge | None:
        return None

    def queue_state(self, depth: int, oldest_age: float) -> None:
        pass

    def delivery(self, result: DeliveryResult) -> None:
        pass


class _Process:
    """This process's metrics and, in multiprocess mode, the directory of their files."""

    metrics: Metrics | None = None
    directory: Path | None = None
    prometheus_ready = False


def get() -> Metrics:
    """This process's metrics (in memory until ``enable_multiprocess`` or ``disable``)."""
    if _Process.metrics is None:
        if _Process.directory is not None:
            _Process.metrics = _multiprocess_metrics()
        else:
            _Process.metrics = Metrics(_prometheus().CollectorRegistry(auto_describe=True))
    return _Process.metrics


def disable() -> None:
    """No metrics in this process and the ones it forks (nobody serves /metrics)."""
    _Process.metrics = NullMetrics()


def enable_multiprocess(directory: Path) -> None:
    """Share metrics between the workers this process will fork; see module doc.

    Call before forking. This process (the supervisor) counts nothing and does not
    import prometheus-client: each worker switches it to multiprocess mode with its
    first ``get()``, before it creates a metric.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _Process.directory = directory
    _Process.metrics = None


def _multiprocess_metrics() -> Metrics:
    """In a worker: values go to files in the directory; render() collects them."""
    values = _prometheus().values
    values.ValueClass = values.MultiProcessValue()
    start_worker()
    return Metrics(None)


# The files prometheus-client writes per process: "<kind>_<pid>.db".
_FILE_KINDS = ("counter", "histogram", "gauge_livesum", "gauge_livemostrecent")


def start_worker() -> None:
    """In a new process: create its metric files private (0600) before prometheus-client
    opens them under the umask; the data_dir holds nothing other users may read."""
    if _Process.directory is None:
        return
    for kind in _FILE_KINDS:
        path = _Process.directory / f"{kind}_{os.getpid()}.db"
        if path.exists():  # left by a dead process with this pid: its counts still count
            os.chmod(path, 0o600)
            continue
        # Made whole under another name, then renamed: a scrape never reads half a file.
        part = path.with_suffix(".part")
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        from prometheus_client.mmap_dict import MmapedDict

        MmapedDict(str(part)).close()  # type: ignore[no-untyped-call]
        os.replace(part, path)


def mark_dead(pid: int) -> None:
    """A worker is gone: its live gauges no longer count (its counters still do).

    What ``prometheus_client.multiprocess.mark_process_dead`` does, removing the
    ``gauge_live*_<pid>.db`` files, without importing prometheus-client into the
    supervisor, which calls this.
    """
    if _Process.directory is not None:
        for path in _Process.directory.glob(f"gauge_live*_{pid}.db"):
            path.unlink(missing_ok=True)


def render() -> tuple[bytes, str]:
    """The body and Content-Type of ``/metrics`` (the Prometheus text format)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    if _Process.directory is None:
        registry = get().registry
        if registry is None:  # disable()d: nothing counted
            return b"", CONTENT_TYPE_LATEST
        return generate_latest(registry), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(_Process.directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
