"""Two instances behind HAProxy with PROXY v2 share their limits through Redis.

Every client here has its own loopback address (127.0.0.x, bound by the
client); HAProxy puts it in the PROXY header, so each instance sees the real
client. A check straight to *each* instance (with the header HAProxy would
send) shows what that instance counts, whichever way HAProxy balanced.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from smtpgate.state.link import RETRY
from tests.attacks.raw import Raw, plain
from tests.e2e.cluster import SMTPGATE
from tests.scaleout.cluster import IP_FAILURES, PER_IP, ScaleOut, auth_code
from tests.scaleout.engines import RedisServer

LEASE_LIMIT = 60.0  # issue 12: a killed instance's slots are free within a minute


async def close_all(clients: list[Raw]) -> None:
    for client in clients:
        await client.close()


async def test_per_address_limit_holds_across_instances(scale_out: ScaleOut) -> None:
    ip = "127.0.0.21"
    clients = []
    for _ in range(PER_IP):
        client, code = await scale_out.via_haproxy(ip)
        clients.append(client)
        assert code == 220
    try:
        for index in (0, 1):  # each instance counts the other's connections too
            client, code = await scale_out.direct(index, ip)
            clients.append(client)
            assert code == 421, f"instance {index} admitted connection {PER_IP + 1}"
        other, code = await scale_out.direct(0, "127.0.0.22")
        clients.append(other)
        assert code == 220
    finally:
        await close_all(clients)


async def test_failed_login_window_holds_across_instances(scale_out: ScaleOut) -> None:
    ip = "127.0.0.31"
    for _ in range(IP_FAILURES):  # new connections: HAProxy spreads them over both
        client, code = await scale_out.via_haproxy(ip)
        assert code == 220
        assert await auth_code(client, "wrong password") == 535
        await client.close()
    for index in (0, 1):  # the right password is refused everywhere now
        client, _ = await scale_out.direct(index, ip)
        assert await auth_code(client) == 454, f"instance {index} did not see the failures"
        await client.close()
    client, _ = await scale_out.direct(1, "127.0.0.32")
    assert await auth_code(client) == 235  # another address is not blocked
    await client.close()


async def test_sigkilled_instance_releases_its_slots(scale_out: ScaleOut) -> None:
    ip = "127.0.0.41"
    a, code_a = await scale_out.direct(0, ip)
    b, code_b = await scale_out.direct(1, ip)
    assert (code_a, code_b) == (220, 220)
    probe, code = await scale_out.direct(1, ip)
    assert code == 421
    await probe.close()
    scale_out.instances[0].kill()  # mid-session: `a` is still open on it
    try:
        probe, code = await scale_out.direct(1, ip)
        await probe.close()
        assert code == 421  # the dead instance's lease still counts until it lapses
        deadline = time.monotonic() + LEASE_LIMIT
        while code != 220:
            assert time.monotonic() < deadline, "slots of the killed instance never freed"
            await asyncio.sleep(1.0)
            probe, code = await scale_out.direct(1, ip)
            await probe.close()
    finally:
        await close_all([a, b])
        await asyncio.to_thread(scale_out.restart, 0)


async def test_redis_restart_under_load_open_keeps_serving(
    scale_out: ScaleOut, redis_server: RedisServer
) -> None:
    codes = await under_load(scale_out, redis_server, "127.0.0.5")
    assert codes and codes <= {235}, codes  # open: every login went through
    assert all(instance.alive for instance in scale_out.instances)


async def under_load(scale_out: ScaleOut, redis_server: RedisServer, prefix: str) -> set[int]:
    """Logins through HAProxy from 4 clients while Redis stops and starts again;
    returns the set of reply codes seen (other greeting refusals as their 421).

    A greeting of ``421 4.7.0`` (max_connections_per_ip, 2 here) is left out: a
    client that reconnects at once can find its previous connection still open on
    the server's side of HAProxy. That limit is this instance's own and holds
    whatever Redis does; the codes are about what Redis's outage changes."""
    stop = asyncio.Event()
    codes: set[int] = set()

    async def client_loop(ip: str) -> None:
        while not stop.is_set():
            client = await Raw.open(scale_out.front, local=ip, greet=False)
            greeting = await client.reply()
            if greeting.code == 220:
                codes.add(await auth_code(client))
            elif (greeting.code, greeting.enh) != (421, "4.7.0"):
                codes.add(greeting.code)
            await client.close()

    loops = [asyncio.create_task(client_loop(f"{prefix}{n}")) for n in range(1, 5)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(redis_server.stop)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(redis_server.start)
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*loops)
    return codes


async def test_redis_restart_under_load_closed_answers_454(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = ScaleOut(tmp_path, redis_server.url, on_failure="closed")
    await asyncio.to_thread(cluster.start)
    try:
        codes = await under_load(cluster, redis_server, "127.0.0.6")
        assert 454 in codes and codes <= {235, 454}, codes
        await asyncio.sleep(RETRY)
        client, _ = await cluster.direct(0, "127.0.0.69")
        assert await auth_code(client) == 235  # Redis is back: normal service
        await client.close()
        assert all(instance.alive for instance in cluster.instances)
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_device_daily_quota_holds_across_instances(scale_out: ScaleOut) -> None:
    config = str(scale_out.instances[0].path)
    done = await asyncio.to_thread(
        subprocess.run,
        [*SMTPGATE, "--config", config, "device", "add", "scanner", "--sender",
         "scan@example.org", "--max-per-day", "3"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    password = done.stdout.splitlines()[-1]
    codes = []
    for _ in range(6):  # new connections: HAProxy alternates between the instances
        client, code = await scale_out.via_haproxy("127.0.0.51")
        assert code == 220
        await client.ehlo()
        assert (await client.cmd(f"AUTH PLAIN {plain('scanner', password)}")).code == 235
        codes.append((await client.cmd("MAIL FROM:<scan@example.org>")).code)
        await client.close()
    assert codes.count(250) == 3 and codes.count(451) == 3, codes
