"""Fixtures for the shared-state tests: a real Redis per module, and the store the processes share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import SessionPostgres
from tests.real.redis import RedisServer, redis_missing


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, stopped after the module."""
    missing = redis_missing()
    if missing is not None:
        pytest.skip(missing)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the processes under test keep their store: a fresh PostgreSQL database's
    postgresql:// URL (the scaled deployment), or a SQLite path (WAL, several processes on one file).
    """
    if request.param == "postgres":
        return SessionPostgres.get().database().url
    return str(tmp_path_factory.mktemp("store") / "modelway.db")
