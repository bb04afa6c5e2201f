"""``[server] workers = 2``: two real processes on one port behave as one server.

They share the failed-login windows (``throttle.db``) and the connection
limits (the supervisor's shared table, ``smtpgate/server/admission.py``):
``max_connections`` and ``max_connections_per_ip`` hold for the server,
exactly, under a burst; a closed connection frees its slot at once and a
worker that dies frees all of its slots and is replaced.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import smtplib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.raw import Raw
from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD

LIMITS = "[limits]\nmax_connections = {total}\nmax_connections_per_ip = {per_ip}\n"


def _auth(address: tuple[str, int], password: str) -> int:
    with smtplib.SMTP(*address, timeout=10) as smtp:
        smtp.ehlo("workers.test")
        token = base64.b64encode(b"\0alice\0" + password.encode()).decode()
        code, _ = smtp.docmd("AUTH", "PLAIN " + token)
        return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(
        tmp_path, workers=2, extra_toml="ip_failure_limit = 4\nip_failure_window = 300\n"
    )
    proc.start()
    yield proc
    proc.stop()


def limited(tmp_path: Path, total: int, per_ip: int) -> ServeProcess:
    proc = ServeProcess(tmp_path, workers=2, extra_toml=LIMITS.format(total=total, per_ip=per_ip))
    proc.start()
    proc.workers(2)
    return proc


# Not 127.0.0.1: ServeProcess.start's probe connections may still hold their slots.
CLIENT = "127.0.0.3"


async def attempt(address: tuple[str, int], local: str = CLIENT) -> Raw | None:
    """Connect; the client if greeted 220, None if refused with 421 4.7.0 and closed."""
    client = await Raw.open(address, local=local, greet=False)
    resp = await client.reply()
    if resp.code == 220:
        return client
    assert (resp.code, resp.enh) == (421, "4.7.0"), resp
    assert await client.reader.read() == b""
    return None


async def close_all(serve: ServeProcess, clients: list[Raw | None]) -> None:
    """Close the clients and wait until their workers have logged each disconnect."""
    ends = []
    for client in clients:
        if client is not None:
            host, port = client.writer.get_extra_info("sockname")[:2]
            ends.append(f"disconnect from [{host}]:{port}")
            client.writer.close()
    deadline = time.monotonic() + 10
    while any(end not in serve.stderr.read_text() for end in ends):
        assert time.monotonic() < deadline, "the server did not see the clients leave"
        await asyncio.sleep(0.05)


def worker_of(serve: ServeProcess, client: Raw) -> int:
    """The pid of the worker that logged this client's connect."""
    host, port = client.writer.get_extra_info("sockname")[:2]
    needle = f"connect from [{host}]:{port} "
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in serve.stderr.read_text().splitlines():
            if needle in line:
                return int(line.split()[2])  # the process id column of the log format
        time.sleep(0.05)
    raise AssertionError(f"no worker logged {needle!r}")


def test_two_workers_serve_and_share_the_ip_window(serve: ServeProcess) -> None:
    assert len(serve.workers(2)) == 2
    # Many short connections: the kernel spreads them over both workers.
    for _ in range(12):
        assert _auth(serve.address, PASSWORD) == 235
    served_by = serve.pids_logging("auth ok", 12)
    assert len(served_by) == 2, "connections did not reach both workers"

    for _ in range(4):  # ip_failure_limit = 4, spread over both workers
        assert _auth(serve.address, "wrong") == 535
    for _ in range(4):  # now blocked in every worker, even with the right password
        assert _auth(serve.address, PASSWORD) == 454
    assert serve.stop() == 0


async def test_per_ip_limit_is_the_servers_whichever_worker_accepts(tmp_path: Path) -> None:
    serve = limited(tmp_path, total=100, per_ip=3)
    try:
        held = [await attempt(serve.address) for _ in range(3)]
        assert all(held)
        # the 4th and later, over many connections that both workers accept: all refused
        assert [await attempt(serve.address) for _ in range(12)] == [None] * 12
        refusers = serve.pids_logging("max_connections_per_ip", 12)
        assert refusers == {str(pid) for pid in serve.workers(2)}, "one worker refused all"
        assert await attempt(serve.address, "127.0.0.2") is not None  # another address: ok
        await close_all(serve, held)
        assert all([await attempt(serve.address) for _ in range(3)])
    finally:
        assert serve.stop() == 0


async def test_a_burst_of_simultaneous_connects_is_counted_exactly(tmp_path: Path) -> None:
    serve = limited(tmp_path, total=12, per_ip=5)
    try:
        burst = await asyncio.gather(*(attempt(serve.address) for _ in range(40)))
        assert sum(c is not None for c in burst) == 5  # max_connections_per_ip
        await close_all(serve, burst)
        sources = [f"127.0.0.{10 + i % 8}" for i in range(40)]
        burst = await asyncio.gather(*(attempt(serve.address, ip) for ip in sources))
        assert sum(c is not None for c in burst) == 12  # max_connections
        await close_all(serve, burst)
    finally:
        assert serve.stop() == 0


async def test_a_reset_connection_frees_its_slot_at_once(tmp_path: Path) -> None:
    serve = limited(tmp_path, total=100, per_ip=2)
    try:
        first, second = await attempt(serve.address), await attempt(serve.address)
        assert first is not None and second is not None
        assert await attempt(serve.address) is None
        sock = first.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.writer.transport.abort()  # RST: the client crashed
        start = time.monotonic()
        while (again := await attempt(serve.address)) is None:
            assert time.monotonic() - start < 1.0, "the slot of a reset connection stayed taken"
            await asyncio.sleep(0.02)
        await close_all(serve, [second, again])
    finally:
        assert serve.stop() == 0


async def test_a_dead_worker_frees_all_its_slots_and_is_replaced(tmp_path: Path) -> None:
    serve = limited(tmp_path, total=100, per_ip=6)
    try:
        before = serve.workers(2)
        held = [await attempt(serve.address) for _ in range(6)]
        assert all(held) and await attempt(serve.address) is None
        owners = [worker_of(serve, c) for c in held if c is not None]
        victim = max(set(owners), key=owners.count)
        os.kill(victim, signal.SIGKILL)
        freed = owners.count(victim)
        start = time.monotonic()
        fresh: list[Raw] = []
        while len(fresh) < freed:  # exactly the victim's slots come back
            try:
                client = await attempt(serve.address)
            except ConnectionError:  # queued in the dead worker's backlog: reset by the kernel
                client = None
            if client is not None:
                fresh.append(client)
            else:
                assert time.monotonic() - start < 5.0, f"{len(fresh)} of {freed} slots freed"
                await asyncio.sleep(0.05)
        assert await attempt(serve.address) is None
        after = serve.workers(2)  # a new worker took the dead one's place
        assert victim not in after and set(before) - {victim} <= set(after)
        survivors = [c for c, owner in zip(held, owners, strict=True) if owner != victim]
        await close_all(serve, [*survivors, *fresh])  # the victim's never logged a goodbye
    finally:
        assert serve.stop() == 0


def _modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` (itself included) -> its permission bits, octal."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): oct(p.stat().st_mode & 0o777) for p in paths}


def test_files_under_data_dir_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Every file naming users or addresses is 0600 and every directory 0700: the
    user store, the shared throttle database with its -wal and -shm, the Maildirs."""
    serve = ServeProcess(tmp_path, workers=2, umask=0)
    serve.start()
    try:
        serve.workers(2)
        for _ in range(4):
            assert _auth(serve.address, "wrong") == 535  # rows in throttle.db
        with smtplib.SMTP(*serve.address, timeout=10) as smtp:
            smtp.login("alice", PASSWORD)
            smtp.sendmail("alice@example.org", ["bob@example.org"], b"Subject: hi\r\n\r\nhi\r\n")
        running = _modes(serve.data)
        assert {"data/throttle.db", "data/throttle.db-wal", "data/throttle.db-shm"} <= set(running)
    finally:
        assert serve.stop() == 0
    for modes in (running, _modes(serve.data)):
        for path, mode in modes.items():
            wanted = "0o700" if (tmp_path / path).is_dir() else "0o600"
            assert mode == wanted, f"{path} is {mode}"
