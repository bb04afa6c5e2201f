"""Fixtures of the scale-out tests; the engines themselves live in tests/scaleout/engines.py."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from tests.scaleout.cluster import ScaleOut
from tests.scaleout.engines import RedisServer
from tests.tools import require_tool


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; each test flushes it first (``state``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and empty."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a test that stopped it and failed before restarting
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def scale_out(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[ScaleOut]:
    """HAProxy and two smtpgate instances (on_failure = "open"), for the session."""
    require_tool("haproxy")
    cluster = ScaleOut(tmp_path_factory.mktemp("scale-out"), redis_server.url)
    cluster.start()
    yield cluster
    cluster.stop()
