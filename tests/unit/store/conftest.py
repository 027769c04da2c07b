"""Fixtures of the store tests: each runs on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelway.store import Store
from modelway.store.postgres import PostgresStore
from modelway.store.sqlite import SqliteStore
from tests.real.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        opened: Store = SqliteStore(tmp_path / "store.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        opened = PostgresStore(server.database("store").url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
