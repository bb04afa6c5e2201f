"""Prometheus metrics: what one server counts, and the sums over real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import time
from pathlib import Path

import aiosmtplib
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from smtpgate.ops import metrics
from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD, ServerFactory, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape() -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    return parse(body.decode())


async def test_one_server_counts_sessions_auth_tls_and_messages(running: ServerFactory) -> None:
    server = await running(limits={"max_message_size": 2000})
    host, port = server.addresses[0]  # STARTTLS
    listener = server.config.listeners[0].address
    before = scrape()
    body = b"Subject: hi\r\n\r\n" + b"x" * 500 + b"\r\n"
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=True,
                               validate_certs=False) as smtp:
        await smtp.ehlo()
        during = scrape()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await smtp.auth_plain("alice", "not the password")
        await smtp.auth_plain("alice", PASSWORD)
        await smtp.sendmail("alice@example.org", ["bob@example.org"], body)
        await smtp.mail("alice@example.org")  # no SIZE=: refused at the end of DATA
        await smtp.rcpt("bob@example.org")
        with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
            await smtp.data(b"y" * 3000)
        assert too_big.value.code == 552
    await asyncio.sleep(0.1)  # the server sees the client leave
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(during, "smtpgate_sessions_open", listener=listener) == 1
    assert value(during, "smtpgate_tls_sessions_open", version="TLSv1.3") - value(
        before, "smtpgate_tls_sessions_open", version="TLSv1.3") == 1
    assert value(after, "smtpgate_sessions_open", listener=listener) == 0
    assert delta("smtpgate_tls_sessions_open", version="TLSv1.3") == 0
    assert delta("smtpgate_sessions_total", listener=listener) == 1
    assert delta("smtpgate_auth_attempts_total", mechanism="PLAIN", reply="535") == 1
    assert delta("smtpgate_auth_attempts_total", mechanism="PLAIN", reply="235") == 1
    assert delta("smtpgate_auth_duration_seconds_count", result="failed") == 1
    assert delta("smtpgate_messages_accepted_total") == 1
    assert delta("smtpgate_messages_rejected_total", reply="552") == 1
    assert delta("smtpgate_data_end_duration_seconds_count") == 2
    assert len(body) <= delta("smtpgate_message_bytes_total") < len(body) + 1000  # + Received


def test_queue_and_delivery_metrics_are_fed_by_calls() -> None:
    m = metrics.get()
    before = scrape()
    m.queue_state(7, 42.5)
    m.delivery("deferred")
    after = scrape()
    assert value(after, "smtpgate_queue_depth") == 7
    assert value(after, "smtpgate_queue_oldest_age_seconds") == 42.5
    assert value(after, "smtpgate_deliveries_total", result="deferred") - value(
        before, "smtpgate_deliveries_total", result="deferred") == 1


def test_unknown_mechanism_names_do_not_become_labels() -> None:
    m = metrics.get()
    m.auth("X-EVIL-" + "A" * 50, 504, 0.0)
    assert not any("X-EVIL" in str(key) for key in scrape())
    assert value(scrape(), "smtpgate_auth_attempts_total", mechanism="other", reply="504") >= 1


# -- several workers: prometheus-client's multiprocess mode --------------------------------


def collect(directory: Path) -> Samples:
    """What render() serves in any process of a multi-worker server."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    return parse(generate_latest(registry).decode())


def sockets(pid: int) -> int:
    fd = Path(f"/proc/{pid}/fd")
    return sum(1 for p in fd.iterdir() if os.readlink(p).startswith("socket:"))


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def greeted(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    assert sock.recv(512).startswith(b"220")
    return sock


def alive(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"NOOP\r\n")
        return sock.recv(512).startswith(b"250")
    except OSError:
        return False


def test_workers_are_summed_and_a_dead_worker_stops_counting(tmp_path: Path) -> None:
    # Metrics are on when /metrics is served: with the admin listener (ops/metrics.py).
    admin = f'[admin]\naddress = "127.0.0.1:{free_port()}"\n'
    serve = ServeProcess(tmp_path, workers=2, extra_toml=admin)
    serve.start()
    clients: list[socket.socket] = []
    try:
        pids = serve.workers(2)
        directory = serve.data / "metrics"
        listener = f"127.0.0.1:{serve.port}"
        clients = [greeted(serve.address) for _ in range(8)]
        with (smtplib.SMTP(*serve.address, timeout=10) as smtp,
              pytest.raises(smtplib.SMTPAuthenticationError)):
            smtp.login("alice", "not the password")
        wait_for(lambda: value(collect(directory), "smtpgate_sessions_open",
                               listener=listener) == 8)
        total = value(collect(directory), "smtpgate_sessions_total", listener=listener)
        assert total >= 9  # ours, and the probe of ServeProcess.start
        busiest = max(pids, key=sockets)
        os.kill(busiest, signal.SIGKILL)
        wait_for(lambda: busiest not in serve.workers(2))
        still = sum(alive(c) for c in clients)
        assert still < 8  # the killed worker held some of them
        wait_for(lambda: value(collect(directory), "smtpgate_sessions_open",
                               listener=listener) == still)
        after = collect(directory)
        assert value(after, "smtpgate_sessions_total", listener=listener) == total
        assert value(after, "smtpgate_auth_attempts_total", mechanism="PLAIN",
                     reply="535") + value(after, "smtpgate_auth_attempts_total",
                                          mechanism="LOGIN", reply="535") >= 1
    finally:
        for c in clients:
            c.close()
        assert serve.stop() == 0
