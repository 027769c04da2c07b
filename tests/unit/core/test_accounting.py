"""The usage recorder against a real SQLite store: rows and charges land exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelway.config import Config
from modelway.core.accounting import UsageRecorder
from modelway.core.directory import Directory
from modelway.core.ledger import Ledger
from modelway.store import AccountRecord, SqliteStore, UsageRecord
from tests.unit.core.test_limits import FixedClock


def row(request_id: str, cost: int) -> UsageRecord:
    return UsageRecord(request_id, "acct", "", "openai", "m", "p", 1, 1, cost, 1, 200, "", 0.0)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Ledger, UsageRecorder]]:
    store = SqliteStore(tmp_path / "usage.db")
    await store.open()
    await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=1000)
    ledger = Ledger(store)
    await ledger.reload()
    recorder = UsageRecorder(store, Directory(store, Config(), FixedClock(0)), ledger, flush_seconds=60)
    yield store, ledger, recorder
    await store.close()


def stored(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
        credits = db.execute("SELECT credits FROM accounts").fetchone()[0]
    return rows, credits


async def test_a_flush_cancelled_mid_write_is_not_written_twice(
    parts: tuple[SqliteStore, Ledger, UsageRecorder], tmp_path: Path
) -> None:
    _, ledger, recorder = parts
    await ledger.settle(await ledger.reserve("acct", 100), 100)
    recorder.record(row("r1", 100))
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)  # the write is now on the store thread
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    await recorder.flush()  # must find nothing left to write
    assert stored(tmp_path / "usage.db") == (1, 900)
    await ledger.reload()
    assert ledger.available("acct") == 900


async def test_close_writes_what_is_pending(parts: tuple[SqliteStore, Ledger, UsageRecorder], tmp_path: Path) -> None:
    _, ledger, recorder = parts
    recorder.start()
    for n in range(3):
        await ledger.settle(await ledger.reserve("acct", 10), 10)
        recorder.record(row(f"r{n}", 10))
    await recorder.close()
    assert stored(tmp_path / "usage.db") == (3, 970)
