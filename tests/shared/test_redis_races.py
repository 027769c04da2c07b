"""Races between registering, rebuilding, writing charges and the operator's credits, against a real
redis-server: each test is an interleaving the second review of the shared state found losing money."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from modelway.config import SharedConfig
from modelway.errors import GatewayError
from modelway.scale import Told, shared_add_credits
from modelway.shared import SharedState, open_shared_state, scripts
from modelway.store import Store, StoreUnavailable
from modelway.store.base import CreditChange
from tests.real.redis import RedisServer
from tests.shared.links import Processes, StoppedClock, new_account, nothing, until
from tests.shared.links import refused as _refused


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
    processes: Processes, store: Store, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, other = await processes(2)
    link = first.link
    account = await new_account(store, 1000)
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
    processes: Processes, store: Store, redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 1000)
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


class _CommitsThen:
    """The store, as the CLI uses it: something happens on the servers' side right after the
    credits are committed, before the CLI tells Redis."""

    def __init__(self, store: Store, then: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._then = then

    async def add_credits(self, account_id: str, amount: int) -> CreditChange | None:
        change = await self._store.add_credits(account_id, amount)
        await self._then()
        return change


async def test_credits_the_operator_adds_are_counted_once_when_a_seed_lands_between_commit_and_word(
    processes: Processes, store: Store, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 100)  # created after the rebuild: Redis does not know it yet

    async def first_call() -> None:
        with contextlib.suppress(GatewayError):  # refused for a moment, or admitted: either way
            await state.ledger.settle(await state.ledger.reserve(account, 1, "Add credits."), 0)

    config = SharedConfig(redis_url=redis_server.url)
    shared = await shared_add_credits(config, _CommitsThen(store, first_call), account, 500)
    assert shared.change is not None and shared.change.after == 600 and shared.told is Told.NOW
    assert not await _refused(state, account, 600)
    assert await _refused(state, account, 1)


async def test_credits_the_operator_adds_are_counted_once_when_a_rebuild_is_due_between_commit_and_word(
    processes: Processes, store: Store, redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 100)
    await state.link.seed(account)

    async def rebuilding() -> None:
        await raw.delete("mw:epoch")  # as a Redis restart or a forced rebuild: read from the store now
        await until(lambda: not state.link.ready, 10)
        # Several rebuild rounds (quiet time 0.3 s): none is installed while the change is under way.
        await asyncio.sleep(1.0)
        assert not state.link.ready

    config = SharedConfig(redis_url=redis_server.url)
    shared = await shared_add_credits(config, _CommitsThen(store, rebuilding), account, 500)
    assert shared.told is Told.REBUILT  # counted once the state is rebuilt, from a store that has it
    await until(lambda: state.link.ready, 10)
    assert not await _refused(state, account, 600)
    assert await _refused(state, account, 1)


async def test_a_retried_word_of_credits_counts_them_once(
    processes: Processes, store: Store, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 100)
    await state.link.seed(account)
    change_id = "c0ffee"
    await state.link.script(scripts.CREDIT_INTENT)(args=[account, change_id, 60_000])
    change = await store.add_credits(account, 500)
    assert change is not None
    tell = state.link.script(scripts.CREDIT_ADD)
    # The first reply was lost (the CLI asks again): the same answer, and nothing added twice.
    assert await tell(args=[account, change.applied, change.after, change_id]) == ["OK"]
    assert await tell(args=[account, change.applied, change.after, change_id]) == ["OK"]
    assert not await _refused(state, account, 600)
    assert await _refused(state, account, 1)


async def test_a_removal_redis_cannot_hear_of_is_not_made(store: Store) -> None:
    account = await new_account(store, 1000)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = SharedConfig(redis_url=f"redis://127.0.0.1:{port}/0", timeout_seconds=0.3)
    removed = await shared_add_credits(config, store, account, -400)
    assert removed.told is Told.REFUSED and removed.change is None
    assert (await store.balances())[account] == 1000
    added = await shared_add_credits(config, store, account, 400)  # an add is never spent early
    assert added.told is Told.UNTOLD and added.change is not None and added.change.after == 1400


async def test_a_credit_change_whose_word_never_came_has_the_state_rebuilt_from_the_store(
    processes: Processes, store: Store
) -> None:
    (state,) = await processes(1)
    account = await new_account(store, 1000)
    await state.link.seed(account)
    before = state.link.epoch
    # The CLI announced a removal, committed it, and died (or lost Redis) before telling Redis.
    await state.link.script(scripts.CREDIT_INTENT)(args=[account, "dead", 200])
    await store.add_credits(account, -600)
    await until(lambda: state.link.ready and state.link.epoch != before, 10)
    assert not await _refused(state, account, 400)
    assert await _refused(state, account, 1)


async def test_a_charge_being_written_across_a_rebuild_is_held_until_its_write_ends(
    processes: Processes, store: Store, redis_server: RedisServer
) -> None:
    first, second = await processes(2)
    account = await new_account(store, 1000)
    charges = await _charged_and_moving(first, account, 100)
    before = first.link.epoch
    redis_server.restart()  # rebuilt from a store that does not have the charge: its write hangs
    await until(lambda: first.link.ready and second.link.ready and first.link.epoch != before, 10)
    # 1000 in the store, 100 on its way there: 900 may be spent, by any process.
    assert not await _refused(second, account, 900)
    assert await _refused(second, account, 1)
    await store.record_calls([], {}, charges)  # the write ends, slowly: the state is rebuilt once more
    first.ledger.charges_written(charges)
    rebuilt = first.link.epoch
    await until(lambda: first.link.ready and second.link.ready and first.link.epoch != rebuilt, 10)
    assert await _refused(second, account, 1)


async def _keys_of(raw: aioredis.Redis, epoch: str) -> list[str]:
    return [key async for key in raw.scan_iter(match=f"mw:{epoch}:*", count=1000)]


async def test_the_keys_of_an_epoch_rebuilt_away_are_deleted(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    first, second = await processes(2)
    accounts = [await new_account(store, 1000) for _ in range(5)]
    for number, account in enumerate(accounts):
        await (first if number % 2 else second).ledger.reserve(account, 10, "Add credits.")
    await first.budgets.hold("key_" + accounts[0], 1000, 10)
    old = first.link.epoch
    assert old is not None and len(await _keys_of(raw, old)) >= 8
    await raw.delete("mw:epoch")  # a rebuild forced without a Redis restart (a doubt, a reaped worker)
    await until(lambda: first.link.ready and second.link.ready and first.link.epoch != old, 10)
    for _ in range(250):
        left = await _keys_of(raw, old)
        if not left:
            break
        await asyncio.sleep(0.02)
    assert left == []
    # The new epoch works, with what each process holds registered again.
    assert not await _refused(first, accounts[0], 990)
    assert await _refused(second, accounts[0], 1)


async def test_a_take_given_up_on_that_reaches_redis_after_the_next_registration_does_nothing(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    first, other = await processes(2)
    link = first.link
    account = await new_account(store, 1000)
    await first.ledger.reserve(account, 100, "Add credits.")
    epoch, sent_as = link.epoch, link.caller
    assert epoch is not None
    await link._register(epoch)  # registered again (after a timeout, say): what it holds, 100
    # The reservation the process gave up on, still in Redis's input buffer, runs only now.
    reserve = raw.register_script(scripts.CREDIT_RESERVE)
    late = await reserve(args=[epoch, sent_as, account, 400])
    assert late[0] != "OK"
    assert await _registered(raw, first, account) == 100
    assert not await _refused(other, account, 900)  # no 400 leaked as held by nobody
    assert await _refused(other, account, 1)


class _StoreGoesDown:
    """The store as a rebuild reads it, with PostgreSQL down for a while (what the real stores raise)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False

    async def balances(self) -> dict[str, int]:
        if self.down:
            raise StoreUnavailable()
        return await self._store.balances()

    async def balance(self, account_id: str) -> int | None:
        if self.down:
            raise StoreUnavailable()
        return await self._store.balance(account_id)

    async def tokens_since(self, since: float) -> dict[str, int]:
        return await self._store.tokens_since(since)


async def test_a_rebuild_failing_on_an_unreachable_store_says_so_once_and_recovers(
    redis_server: RedisServer, store: Store, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    source = _StoreGoesDown(store)
    config = SharedConfig(redis_url=redis_server.url, rebuild_quiet_seconds=0.05, timeout_seconds=0.3)
    state = open_shared_state(config, source, StoppedClock(1_800_000_030.0), nothing)
    await state.start()
    try:
        await until(lambda: state.link.ready, 10)
        source.down = True
        await raw.delete("mw:epoch")
        await asyncio.sleep(1.5)  # a dozen rebuild attempts, each failing on the store
        assert not state.link.ready
        source.down = False
        await until(lambda: state.link.ready, 10)
    finally:
        await state.close()
    records = [record for record in caplog.records if record.name == "modelway.shared.link"]
    failing = [record for record in records if "store is unreachable" in record.getMessage()]
    assert len(failing) == 1, [record.getMessage() for record in records]
    assert all(record.exc_info is None for record in records)
