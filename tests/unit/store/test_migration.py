"""A store made before usage.client_request_id existed gets the column, and keeps its rows."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from modelway.store import SqliteStore, UsageRecord

OLD_USAGE = """
CREATE TABLE usage (
    id INTEGER PRIMARY KEY, request_id TEXT, account_id TEXT, key_id TEXT, surface TEXT, model TEXT,
    provider TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost INTEGER, latency_ms INTEGER,
    status INTEGER, error_code TEXT, created_at FLOAT
)
"""


async def test_an_old_usage_table_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_USAGE)
        db.execute("INSERT INTO usage (request_id, status, cost) VALUES ('old-1', 200, 5)")
    async with SqliteStore(str(path)) as store:
        row = UsageRecord("req_new", "acct", "key", "grpc", "m", "p", 1, 2, 3, 4, 200, "", 1.0, "client-7")
        await store.record_calls([row], {}, {})
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT request_id, client_request_id FROM usage ORDER BY id").fetchall()
    assert rows == [("old-1", ""), ("req_new", "client-7")]


async def test_opening_twice_is_harmless(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    async with SqliteStore(path):
        pass
    async with SqliteStore(path):
        pass
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(usage)")]
    assert columns.count("client_request_id") == 1


async def test_repeated_old_request_ids_become_unique_even_when_a_renamed_one_collides(tmp_path: Path) -> None:
    path = tmp_path / "dups.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_USAGE)
        # Clients once chose request ids: "a" twice, and a third row already named what "a" would become.
        db.executemany(
            "INSERT INTO usage (id, request_id, status, cost) VALUES (?, ?, 200, 1)", [(1, "a"), (2, "a"), (3, "a-2")]
        )
        db.execute("INSERT INTO usage (id, request_id, status, cost) VALUES (4, 'a-2', 200, 1)")
    async with SqliteStore(str(path)) as store:
        # One row per request id from now on: a later state of a call rewrites its row.
        first = UsageRecord("req_x", "acct", "key", "openai", "m", "p", 1, 2, 3, 4, 0, "in_progress", 1.0)
        await store.record_calls([first, dataclasses.replace(first, status=200, error_code="")], {}, {})
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT request_id FROM usage ORDER BY id")]
        final = db.execute("SELECT status, error_code FROM usage WHERE request_id = 'req_x'").fetchall()
    assert len(ids) == len(set(ids)) == 5
    assert ids[:2] == ["a", "a-2"]
    assert final == [(200, "")]
