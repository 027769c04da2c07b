"""The usage recorder against a real SQLite store: rows and charges land exactly once, and callers learn when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from modelway.config import Config
from modelway.core.accounting import UsageRecorder
from modelway.core.directory import Directory
from modelway.core.ledger import Ledger
from modelway.store import AccountRecord, SqliteStore, Store, UsageRecord
from modelway.store.postgres import PostgresStore
from tests.real.postgres import connect_db
from tests.unit.core.test_limits import FixedClock


def row(request_id: str, cost: int) -> UsageRecord:
    return UsageRecord(request_id, "acct", "", "openai", "m", "p", 1, 1, cost, 1, 200, "", 0.0)


# The store, the ledger and recorder over it, and where a test reads the store (a path or a database).
Parts = tuple[Store, Ledger, UsageRecorder, Any]


@pytest.fixture(params=["sqlite", "postgres"])
async def parts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Parts]:
    """The same tests on each store; on PostgreSQL a fresh database of the session's server."""
    where: Any = tmp_path / "usage.db"
    store: Store = SqliteStore(where)
    if request.param == "postgres":
        where = request.getfixturevalue("postgres").database("accounting")
        store = PostgresStore(where.url)
    await store.open()
    await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=1000)
    ledger = Ledger(store)
    await ledger.reload()
    # A flush timer far away: anything committed below was committed because a row asked for it.
    recorder = UsageRecorder(store, Directory(store, Config(), FixedClock(0)), ledger, flush_seconds=60, commit_wait=1)
    yield store, ledger, recorder, where
    await store.close()


def stored(where: Any) -> tuple[int, int]:
    with connect_db(where) as db:
        rows = db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
        credits = db.execute("SELECT credits FROM accounts").fetchone()[0]
    return rows, credits


async def charge(ledger: Ledger, request_id: str, cost: int) -> UsageRecord:
    await ledger.settle(await ledger.reserve("acct", cost, "Add credits."), cost)
    return row(request_id, cost)


async def test_a_recorded_row_is_committed_with_its_charge_when_its_future_resolves(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    recorder.start()
    committed = recorder.record(await charge(ledger, "r1", 100))
    assert not committed.done()
    assert await recorder.committed(committed)
    assert stored(where) == (1, 900)
    await recorder.close()


async def test_rows_recorded_together_share_commits_and_each_is_committed_once(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    recorder.start()
    futures = [recorder.record(await charge(ledger, f"r{n}", 1)) for n in range(200)]
    assert all(await asyncio.gather(*(recorder.committed(f) for f in futures)))
    assert stored(where) == (200, 800)
    await recorder.close()
    assert stored(where) == (200, 800)


async def test_a_failed_commit_keeps_the_row_and_retries_it_once(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    with connect_db(where) as db:
        db.execute("ALTER TABLE usage RENAME TO usage_away")  # every write now fails
    recorder.start()
    committed = recorder.record(await charge(ledger, "r1", 100))
    # The caller stops waiting after commit_wait and answers; the row is not lost.
    assert not await recorder.committed(committed)
    assert recorder.queue_depth == 1
    assert ledger.available("acct") == 900
    with connect_db(where) as db:
        assert db.execute("SELECT credits FROM accounts").fetchone() == (1000,)  # no charge without its row
        db.execute("ALTER TABLE usage_away RENAME TO usage")
    await asyncio.wait_for(committed, 5)  # the writer's retry
    assert stored(where) == (1, 900)
    assert recorder.queue_depth == 0
    await recorder.close()
    assert stored(where) == (1, 900)
    await ledger.reload()
    assert ledger.available("acct") == 900


async def test_a_flush_cancelled_mid_write_is_not_written_twice(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    committed = recorder.record(await charge(ledger, "r1", 100))
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)  # the write is now on the store thread
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert committed.done()
    await recorder.flush()  # must find nothing left to write
    assert stored(where) == (1, 900)
    await ledger.reload()
    assert ledger.available("acct") == 900


async def test_close_writes_what_is_pending(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    recorder.start()
    for n in range(3):
        recorder.record(await charge(ledger, f"r{n}", 10))
    await recorder.close()
    assert stored(where) == (3, 970)


async def test_a_checkpointed_call_is_one_row_charged_once_in_parts(parts: Parts) -> None:
    _, ledger, recorder, where = parts
    recorder.start()
    reservation = await ledger.reserve("acct", 500, "Add credits.")
    reservation, drawn = await ledger.draw(reservation, 120)
    assert (reservation.amount, drawn) == (380, 120)
    assert await recorder.committed(recorder.record(row("stream", 120), charge=120))
    assert stored(where) == (1, 880)
    final = await ledger.settle(reservation, 300 - 120)
    assert await recorder.committed(recorder.record(row("stream", 120 + final), charge=final))
    with connect_db(where) as db:
        assert db.execute("SELECT request_id, cost FROM usage").fetchall() == [("stream", 300)]
    assert stored(where) == (1, 700)
    assert ledger.available("acct") == 700
    await recorder.close()


async def test_a_draw_never_takes_more_than_was_reserved(parts: Parts) -> None:
    _, ledger, _, _ = parts
    reservation, drawn = await ledger.draw(await ledger.reserve("acct", 50, "Add credits."), 80)
    assert (reservation.amount, drawn) == (0, 50)
    assert ledger.available("acct") == 950


async def test_unwritten_tokens_count_the_rows_not_committed_yet_per_key_from_a_moment(parts: Parts) -> None:
    _, _, recorder, _ = parts

    def call(request_id: str, key: str, tokens: int, at: float) -> UsageRecord:
        return UsageRecord(request_id, "acct", key, "openai", "m", "p", tokens, 1, 0, 1, 200, "", at)

    recorder.record(call("r1", "k1", 9, 100.0))  # 10 tokens
    recorder.record(call("r2", "k1", 4, 100.0))  # 5
    recorder.record(call("r3", "k2", 2, 100.0))  # 3
    recorder.record(call("r4", "k2", 50, 10.0))  # before the moment asked for: not counted
    recorder.record(call("r3", "k2", 6, 100.0))  # a later state of r3 (a stream's end after its checkpoint)
    assert recorder.unwritten_tokens(50.0) == {"k1": 15, "k2": 7}
    await recorder.flush()  # committed: nothing is unwritten any more
    assert recorder.unwritten_tokens(50.0) == {}


class _LookingLedger(Ledger):
    """A ledger whose charge move reads the recorder meanwhile, as a shared one registering from
    inside the move does (its REGISTER sends the unwritten tokens)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.recorder: UsageRecorder | None = None
        self.seen: list[tuple[dict[str, int], int]] = []

    async def writing(self, charges: Any, *, final: bool = False) -> None:
        assert self.recorder is not None
        self.seen.append((self.recorder.unwritten_tokens(0.0), self.recorder.queue_depth))
        await super().writing(charges, final=final)


async def test_a_batch_whose_charges_are_moving_still_counts_as_unwritten(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "usage.db") as store:
        await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=1000)
        ledger = _LookingLedger(store)
        await ledger.reload()
        recorder = UsageRecorder(store, Directory(store, Config(), FixedClock(0)), ledger, flush_seconds=60)
        ledger.recorder = recorder
        recorder.record(UsageRecord("r1", "acct", "key1", "openai", "m", "p", 20, 10, 0, 1, 200, "", 5.0))
        await recorder.flush()
        assert ledger.seen == [({"key1": 30}, 1)]
        assert recorder.unwritten_tokens(0.0) == {}
        assert recorder.queue_depth == 0
