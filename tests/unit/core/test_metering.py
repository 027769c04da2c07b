"""A call's meter against a real ledger, recorder and SQLite store: how each ending is recorded and charged."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelway.config import Config, ModelConfig
from modelway.core.accounting import UsageRecorder
from modelway.core.budgets import TokenBudgets
from modelway.core.directory import Caller, Directory
from modelway.core.ledger import Ledger
from modelway.core.metering import HoldsInTurn, Metering
from modelway.errors import GatewayError, Reason
from modelway.store import AccountRecord, KeyRecord, SqliteStore
from modelway.surfaces.openai import OPENAI_WORDING
from tests.unit.core.test_limits import FixedClock

MODEL = ModelConfig(id="m", provider="p", input_credits_per_1k=1, output_credits_per_1k=1)


@dataclass
class Parts:
    metering: Metering
    ledger: Ledger
    caller: Caller
    db: Path


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    store = SqliteStore(tmp_path / "m.db")
    await store.open()
    await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=10_000_000)
    config = Config()
    ledger = Ledger(store)
    await ledger.reload()
    clock = FixedClock(0)
    recorder = UsageRecorder(store, Directory(store, config, clock), ledger, flush_seconds=60)
    recorder.start()
    key = KeyRecord("key", "acct", "k", "hash", "hint", 0, ("chat.completions",))
    caller = Caller(key=key, account=AccountRecord("acct", "a", "free", 0), plan=config.plan("free"))
    metering = Metering(recorder, ledger, HoldsInTurn(TokenBudgets(clock), ledger), clock)
    yield Parts(metering, ledger, caller, tmp_path / "m.db")
    await recorder.close()
    await store.close()


def rows(db: Path) -> list[tuple[int, str, int, int]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT status, error_code, completion_tokens, cost FROM usage").fetchall()


def balance(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT credits FROM accounts").fetchone()[0])


async def test_a_withdrawn_answer_is_one_row_of_its_error_and_costs_nothing(parts: Parts) -> None:
    async with parts.metering.open(request_id="req_1", surface="grpc", status_of=lambda e: e.http_status) as meter:
        await meter.admit(parts.caller, MODEL, 10, 100, 100_000, OPENAI_WORDING)
        meter.completion_tokens = 5
        await meter.finish()
        assert rows(parts.db) == [(200, "", 5, 15_000)]
        assert balance(parts.db) == 10_000_000 - 15_000
        await meter.withdraw(GatewayError(Reason.DEADLINE_EXCEEDED, "too late"))
    await parts.metering.recorder.flush()
    assert rows(parts.db) == [(504, "deadline_exceeded", 0, 0)]
    assert balance(parts.db) == 10_000_000
    assert parts.ledger.available("acct") == 10_000_000


async def test_a_call_cancelled_by_the_server_stopping_is_a_shutdown_not_a_client_leaving(parts: Parts) -> None:
    parts.metering.shutting_down = True
    with pytest.raises(asyncio.CancelledError):
        async with parts.metering.open(request_id="req_2", surface="openai", status_of=lambda e: 500) as meter:
            await meter.admit(parts.caller, MODEL, 10, 100, 100_000, OPENAI_WORDING)
            meter.completion_tokens = 3
            raise asyncio.CancelledError
    await parts.metering.recorder.flush()
    assert rows(parts.db) == [(503, "server_shutdown", 3, 13_000)]
    assert await parts.metering.quiesce(0.1)
