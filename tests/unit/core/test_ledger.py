from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelway.core.ledger import Ledger
from modelway.errors import GatewayError, Reason
from modelway.store import AccountRecord, SqliteStore


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=1000)
    ledger = Ledger(store)
    await ledger.reload()
    yield ledger
    await store.close()


async def test_reservations_hold_back_the_worst_case(ledger: Ledger) -> None:
    first = await ledger.reserve("acct", 600, "Add credits.")
    with pytest.raises(GatewayError) as caught:
        await ledger.reserve("acct", 600, "Add credits.")
    assert caught.value.reason is Reason.INSUFFICIENT_CREDITS
    assert caught.value.http_status == 402
    assert await ledger.settle(first, 250) == 250
    assert ledger.available("acct") == 750
    await ledger.reserve("acct", 600, "Add credits.")


async def test_a_charge_never_takes_the_balance_below_zero(ledger: Ledger) -> None:
    reservation = await ledger.reserve("acct", 900, "Add credits.")
    await ledger.reserve("acct", 100, "Add credits.")
    assert await ledger.settle(reservation, 5000) == 900  # what was left for it
    assert ledger.available("acct") == 0


async def test_charges_reach_the_store_once(ledger: Ledger) -> None:
    await ledger.settle(await ledger.reserve("acct", 300, "Add credits."), 300)
    assert ledger.available("acct") == 700  # counted before it is written
    async with ledger.lock:
        await ledger._store.record_calls([], {}, {"acct": 300})
        ledger.charges_written({"acct": 300})
    assert ledger.available("acct") == 700  # and not twice after
    await ledger.reload()
    assert ledger.available("acct") == 700
