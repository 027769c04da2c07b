"""Races between registering, rebuilding, writing charges and the operator's credits, against a real
redis-server: each test is an interleaving the second review of the shared state found losing money."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState
from tests.real.redis import RedisServer
from tests.shared.links import Processes, new_account, until


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to read what Redis really holds."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def _refused(state: SharedState, account: str, amount: int) -> bool:
    """Whether reserving `amount` is refused for want of credits (admitted otherwise)."""
    try:
        await state.ledger.reserve(account, amount, "Add credits.")
    except GatewayError as exc:
        assert exc.reason is Reason.INSUFFICIENT_CREDITS, exc
        return True
    return False


async def _registered(raw: aioredis.Redis, state: SharedState, account: str) -> int:
    """What Redis files as this process's part of the account's held credits in the current epoch."""
    link = state.link
    return int(await raw.hget(f"mw:{link.epoch}:a:{account}", f"h:{link.proc}") or 0)


async def _until_registered(raw: aioredis.Redis, state: SharedState, account: str, amount: int) -> None:
    for _ in range(250):
        if await _registered(raw, state, account) == amount:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"Redis never filed {amount} as held by the process")


async def test_two_registrations_at_once_never_drop_a_reservation_made_between_them(
    processes: Processes, store: object, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, other = await processes(2)
    link = first.link
    account = await new_account(store, 1000)  # type: ignore[arg-type]
    await first.ledger.reserve(account, 1, "Add credits.")
    epoch = link.epoch
    assert epoch is not None
    # The second registration's first step answers late (a slow network, a loaded Redis): the one
    # timing seam of this test. Everything else is the real link on the real Redis.
    alive = link._alive
    slow = asyncio.Event()

    async def alive_late(at: str) -> None:
        if slow.is_set():
            slow.clear()
            await asyncio.sleep(0.2)
        await alive(at)

    monkeypatch.setattr(link, "_alive", alive_late)
    one = asyncio.create_task(link._register(epoch))  # as the background upkeep would
    await asyncio.sleep(0)
    slow.set()
    two = asyncio.create_task(link._register(epoch))  # as a call catching up after a rebuild would
    await asyncio.sleep(0)
    await one
    await first.ledger.reserve(account, 500, "Add credits.")  # between the two registrations
    await two
    assert link.credits_held[account] == 501
    assert await _registered(raw, first, account) == 501
    assert int(await raw.hget(f"mw:{epoch}:a:{account}", "held") or 0) == 501
    # Another process can spend what is left, and not a credit more.
    assert not await _refused(other, account, 499)
    assert await _refused(other, account, 1)


async def _charged_and_moving(state: SharedState, account: str, amount: int) -> dict[str, int]:
    """A call charged `amount` and the usage writer moved it to the balance in Redis: its row is
    now being written to the store (which does not have it yet)."""
    await state.ledger.settle(await state.ledger.reserve(account, amount, "Add credits."), amount)
    charges = {account: amount}
    await state.ledger.writing(charges)
    return charges


async def test_a_failed_write_undone_after_a_rebuild_never_adds_the_charge_to_the_rebuilt_balance(
    processes: Processes, store: object, redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 1000)  # type: ignore[arg-type]
    charges = await _charged_and_moving(state, account, 100)
    before = state.link.epoch
    redis_server.restart()  # rebuilt from a store without the charge, while its write hangs
    await until(lambda: state.link.ready and state.link.epoch != before, 10)
    state.ledger.write_failed(charges)  # the write fails: the row will be written again later
    await until(lambda: state.link.credits_held[account] == 100, 5)
    await _until_registered(raw, state, account, 100)
    # 1000 in the store, 100 owed by the row still to be written: 900 may be spent, not 1000.
    assert not await _refused(state, account, 900)
    assert await _refused(state, account, 1)
