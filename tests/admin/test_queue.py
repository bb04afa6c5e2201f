"""The queue page against a real relay-mode server whose smarthost is down: a message
submitted over SMTP stays queued; the page lists it, shows its headers, retries it (the
deliverer tries again at once) and deletes it. In discard mode the page says there is
no queue and its forms change nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosmtplib
import pytest

from smtpgate.admin.queue import header_section, span
from smtpgate.relay.queue import QUEUE_DIR, QueueStore
from smtpgate.relay.service import Relay
from smtpgate.server.app import Server
from tests.admin.conftest import Admin, admin_sections, create_admin, csrf_of, log_in
from tests.e2e.conftest import PASSWORD, create_user, free_port, make_config

MESSAGE = b"From: alice@example.test\r\nTo: you@remote.test\r\nSubject: stuck\r\n\r\nbody text\r\n"


def relay_sections() -> dict[str, object]:
    """Relay mode towards a loopback port nobody listens on; the retry an hour away."""
    return admin_sections(
        delivery={"mode": "relay"},
        relay={"host": "127.0.0.1", "port": free_port(), "tls": "none", "retry": "1h"},
    )


@pytest.fixture
async def relaying(tmp_path: Path) -> AsyncIterator[tuple[Admin, QueueStore]]:
    config = make_config(tmp_path, **relay_sections())
    await create_user(config)
    await create_admin(config)
    relay = Relay(config)
    server = Server(config, delivery=relay.target)
    await server.start()
    await relay.start()
    assert server.admin is not None and server.admin.address is not None
    host, port = server.admin.address
    try:
        yield Admin(server, f"http://{host}:{port}"), QueueStore(config.data_dir / QUEUE_DIR)
    finally:
        await server.stop(grace=1.0)
        await relay.stop()


async def submit(admin: Admin) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=admin.smtp_port, start_tls=False,
                               timeout=10) as client:
        await client.login("alice", PASSWORD)
        await client.sendmail("alice@example.test", ["you@remote.test"], MESSAGE)


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def attempts(store: QueueStore) -> int:
    ids = store.ids()
    return store.load(ids[0]).attempts if ids else -1


async def test_list_show_retry_delete(relaying: tuple[Admin, QueueStore]) -> None:
    admin, store = relaying
    await submit(admin)
    await wait_for(lambda: attempts(store) == 1)  # tried once, refused, an hour to wait
    [queue_id] = store.ids()
    async with admin.client() as client:
        await log_in(client)
        async with client.get("/queue") as page:
            listing = await page.text()
        assert queue_id in listing and "&lt;alice@example.test&gt;" in listing
        assert "deferred" in listing and "1 message(s) queued" in listing
        async with client.get("/") as page:  # the overview sums the queue up
            assert "1 message(s) waiting" in await page.text()

        async with client.get("/queue/show", params={"id": queue_id}) as page:
            shown = await page.text()
        assert "Subject: stuck" in shown and "you@remote.test" in shown
        assert "body text" not in shown  # headers only

        token = await csrf_of(client, "/queue")
        async with client.post("/queue/retry", data={"csrf": token, "id": queue_id}) as page:
            assert f"{queue_id} will be tried now." in await page.text()
        await wait_for(lambda: attempts(store) == 2)  # the deliverer tried again at once

        async with client.post("/queue/delete", data={"csrf": token, "id": queue_id}) as page:
            assert f"Deleted {queue_id}." in await page.text()
        assert store.ids() == []
        async with client.post("/queue/retry", data={"csrf": token, "id": queue_id}) as page:
            assert "Not done: no queued message" in await page.text()
        async with client.get("/queue/show", params={"id": "../x"}) as page:
            assert "no queued message" in await page.text()


async def test_no_queue_outside_relay_mode(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        async with client.get("/queue") as page:
            assert 'id="no-queue"' in await page.text()
        async with client.get("/") as page:
            assert "there is no queue" in await page.text()
        token = await csrf_of(client, "/queue")
        async with client.post("/queue/delete", data={"csrf": token, "id": "ABC"}) as page:
            assert "there is no queue" in await page.text()
        async with client.post("/queue/delete", data={"id": "ABC"}) as page:
            assert page.status == 403  # CSRF token wanted here too


def test_header_section_stops_at_the_empty_line() -> None:
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == "A: 1\nB: 2"
    assert header_section(b"A: 1\n\nbody") == "A: 1"
    assert re.fullmatch(r"A: \ufffd", header_section(b"A: \xff\r\n\r\n"))


def test_spans_read_as_people_say_them() -> None:
    assert [span(s) for s in (0.2, 42, 3594, 3600, 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "1s", "42s", "59m", "1h", "1h 5m", "2d 4h"]
