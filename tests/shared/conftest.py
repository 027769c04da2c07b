"""Fixtures for the shared-state tests: a real Redis per module, and the store the processes share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from modelway.config import SharedConfig
from modelway.shared import SharedState, open_shared_state
from modelway.store import SqliteStore
from tests.conftest import SessionPostgres
from tests.real.redis import RedisServer, redis_missing
from tests.shared.links import QUIET, Processes, StoppedClock, nothing, until


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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "shared.db") as store:
        yield store


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to read what Redis really holds (and to cut the others' connections)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def processes(redis_server: RedisServer, store: SqliteStore) -> AsyncIterator[Processes]:
    """`await processes(n)`: n links to the one Redis, as n server processes would have."""
    opened: list[SharedState] = []
    clock = StoppedClock(1_800_000_030.0)

    async def start(count: int) -> list[SharedState]:
        config = SharedConfig(redis_url=redis_server.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.3)
        states = [open_shared_state(config, store, clock, nothing) for _ in range(count)]
        for state in states:
            await state.start()
            opened.append(state)
        await until(lambda: all(state.link.ready for state in states), 10)
        return states

    yield start
    for state in opened:
        await state.close()
