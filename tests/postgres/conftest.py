"""Fixtures for the PostgreSQL tests: one cluster per test session, one database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres.cluster import PgCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL server, started on first use and stopped at the end."""
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a new, empty database on the session's cluster."""
    return pg_cluster.database()
