"""/healthz, /readyz and /metrics: open to anyone, honest about the store and hooks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp

from smtpgate.admin.context import AdminContext
from smtpgate.admin.listener import AdminListener
from smtpgate.server.app import Server
from tests.admin.conftest import Admin, admin_sections
from tests.e2e.conftest import make_config


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.text()


async def test_health_ready_and_metrics(admin: Admin) -> None:
    assert await get(admin.url + "/healthz") == (200, "ok\n")
    assert await get(admin.url + "/readyz") == (200, "ready\n")
    status, text = await get(admin.url + "/metrics")
    assert status == 200
    assert "# TYPE smtpgate_sessions_open gauge" in text  # ops/metrics.py's registry


async def test_not_ready_when_the_store_fails(tmp_path: Path) -> None:
    config = make_config(tmp_path, **admin_sections(store={"url": "sqlite:///users-dir"}))
    (config.data_dir / "users-dir").mkdir(parents=True)  # a folder where the database goes
    async with Server(config) as server:
        assert server.admin is not None and server.admin.address is not None
        url = "http://{}:{}".format(*server.admin.address)
        assert await get(url + "/healthz") == (200, "ok\n")  # alive, but
        assert await get(url + "/readyz") == (503, "not ready: credential store unavailable\n")


async def served(admin: Admin, **changes: object) -> AdminListener:
    """A second admin listener on the same server objects, with ``changes`` to its context."""
    assert admin.server.admin is not None
    context = admin.server.admin.context
    config = make_config(Path(admin.config.data_dir).parent, **admin_sections())
    listener = AdminListener(dataclasses.replace(context, config=config, **changes))  # type: ignore[arg-type]
    await listener.start()
    return listener


async def test_not_ready_when_the_shared_state_hook_says_so(admin: Admin) -> None:
    async def down() -> bool:
        return False

    listener = await served(admin, ready=down)
    try:
        assert listener.address is not None
        url = "http://{}:{}".format(*listener.address)
        assert await get(url + "/readyz") == (503, "not ready: shared state unavailable\n")
    finally:
        await listener.stop()


async def test_metrics_503_without_a_renderer(admin: Admin) -> None:
    listener = await served(admin, metrics=None)
    try:
        assert listener.address is not None
        status, _ = await get("http://{}:{}/metrics".format(*listener.address))
        assert status == 503
    finally:
        await listener.stop()


async def test_admin_off_unless_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.admin.address == ""
    async with Server(config) as server:
        assert server.admin is None and server.events is None
    assert not (config.data_dir / "admin-events.db").exists()


def test_context_is_what_the_listener_gets() -> None:
    assert {f.name for f in dataclasses.fields(AdminContext)} >= {"metrics", "ready", "throttle"}
