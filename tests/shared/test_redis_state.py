"""The Lua scripts' semantics against a real redis-server: same rules as the in-process state, atomic races."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from modelway.config import SharedConfig
from modelway.core.budgets import TokenBudgets
from modelway.core.ledger import Ledger
from modelway.core.limits import LimitRule, RateLimiter
from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState, open_shared_state
from modelway.store import AccountRecord, SqliteStore
from tests.real.redis import RedisServer

QUIET = 0.3


class StoppedClock:
    """Wall time fixed at a chosen moment (monotonic time runs on)."""

    def __init__(self, moment: float) -> None:
        self.moment = moment

    def now(self) -> float:
        return self.moment

    def monotonic(self) -> float:
        return time.monotonic()


async def _nothing() -> None:
    return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "shared.db") as store:
        yield store


Processes = Callable[[int], Awaitable[list[SharedState]]]


@pytest.fixture
async def processes(redis_server: RedisServer, store: SqliteStore) -> AsyncIterator[Processes]:
    """`await processes(n)`: n links to the one Redis, as n server processes would have."""
    opened: list[SharedState] = []
    clock = StoppedClock(1_800_000_030.0)

    async def start(count: int) -> list[SharedState]:
        config = SharedConfig(redis_url=redis_server.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.3)
        states = [open_shared_state(config, store, clock, _nothing) for _ in range(count)]
        for state in states:
            await state.start()
            opened.append(state)
        await _until(lambda: all(state.link.ready for state in states), 10)
        return states

    yield start
    for state in opened:
        await state.close()


async def _until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _account(store: SqliteStore, credits: int) -> str:
    account = "acct_" + secrets.token_hex(6)
    await store.insert_account(AccountRecord(account, "a", "free", 0), credits=credits)
    return account


async def test_200_concurrent_reserves_for_100_units_admit_exactly_100(
    processes: Processes, store: SqliteStore
) -> None:
    first, second = await processes(2)
    account = await _account(store, 100 * 7)

    async def reserve(state: SharedState) -> bool:
        try:
            await state.ledger.reserve(account, 7, "Add credits.")
        except GatewayError as exc:
            assert exc.reason is Reason.INSUFFICIENT_CREDITS
            return False
        return True

    results = await asyncio.gather(*(reserve(first if i % 2 else second) for i in range(200)))
    assert sum(results) == 100
    assert first.link.credits_held[account] + second.link.credits_held[account] == 700


async def test_settle_charges_the_real_cost_never_beyond_the_balance(processes: Processes, store: SqliteStore) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    in_memory = Ledger(store)
    await in_memory.reload()
    for ledger in (state.ledger, in_memory):
        big = await ledger.reserve(account, 900, "Add credits.")
        await ledger.reserve(account, 100, "Add credits.")
        assert await ledger.settle(big, 5000) == 900
        assert ledger.available(account) == 0
        with pytest.raises(GatewayError) as caught:
            await ledger.reserve(account, 1, "Add credits.")
        assert caught.value.reason is Reason.INSUFFICIENT_CREDITS
        assert caught.value.message.endswith("the account has 0. Add credits.")


async def test_charges_written_leave_the_balance_and_refunds_come_back(
    processes: Processes, store: SqliteStore
) -> None:
    first, second = await processes(2)
    account = await _account(store, 1000)
    reservation = await first.ledger.reserve(account, 400, "Add credits.")
    assert await first.ledger.settle(reservation, 300) == 300
    charges = {account: 300}
    await first.ledger.writing(charges)
    await store.record_calls([], {}, charges)
    first.ledger.charges_written(charges)
    assert (await store.balances())[account] == 700
    assert first.link.credits_held[account] == 0
    # The other process sees the balance Redis keeps: 700, and takes all of it.
    await second.ledger.reserve(account, 700, "Add credits.")
    with pytest.raises(GatewayError):
        await first.ledger.reserve(account, 1, "Add credits.")


async def test_a_failed_write_puts_the_charge_back_as_held(processes: Processes, store: SqliteStore) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    reservation = await state.ledger.reserve(account, 400, "Add credits.")
    await state.ledger.settle(reservation, 400)
    charges = {account: 400}
    await state.ledger.writing(charges)
    state.ledger.write_failed(charges)
    await _until(lambda: state.link.credits_held[account] == 400, 5)
    await state.ledger.reserve(account, 600, "Add credits.")
    with pytest.raises(GatewayError):
        await state.ledger.reserve(account, 1, "Add credits.")


async def test_rate_limits_across_processes_admit_exactly_the_limit_with_the_in_memory_refusal(
    processes: Processes,
) -> None:
    states = await processes(3)
    scope = "key:" + secrets.token_hex(4) + ":chat"
    rules = (LimitRule(scope, 50, "Rate limit reached"), LimitRule("global-" + scope, 10_000, "Global"))

    async def call(state: SharedState) -> GatewayError | None:
        try:
            await state.limits.acquire(*rules)
        except GatewayError as exc:
            return exc
        return None

    outcomes = await asyncio.gather(*(call(states[i % 3]) for i in range(300)))
    refusals = [outcome for outcome in outcomes if outcome is not None]
    assert len(refusals) == 250
    # The in-process limiter, at the same moment, refuses in the same words and headers.
    reference = RateLimiter(StoppedClock(1_800_000_030.0))
    for _ in range(50):
        await reference.acquire(*rules)
    with pytest.raises(GatewayError) as expected:
        await reference.acquire(*rules)
    for refusal in refusals:
        assert (refusal.reason, refusal.message, refusal.retry_after, refusal.headers) == (
            expected.value.reason,
            expected.value.message,
            expected.value.retry_after,
            expected.value.headers,
        )
    assert refusals[0].retry_after == 30


async def test_the_global_rule_refuses_without_using_the_keys_quota(processes: Processes) -> None:
    (state,) = await processes(1)
    key, shared = "key:" + secrets.token_hex(4), "g-" + secrets.token_hex(4)
    await state.limits.acquire(LimitRule(shared, 1, "Global", reason=Reason.GLOBAL_RATE_LIMITED))
    with pytest.raises(GatewayError) as caught:
        await state.limits.acquire(LimitRule(key, 5, "Key"), LimitRule(shared, 1, "Global", Reason.GLOBAL_RATE_LIMITED))
    assert caught.value.reason is Reason.GLOBAL_RATE_LIMITED
    (state_after,) = await state.limits.acquire(LimitRule(key, 5, "Key"))
    assert state_after.remaining == 4


async def test_token_budgets_follow_the_in_memory_rule(processes: Processes, store: SqliteStore) -> None:
    first, second = await processes(2)
    key = "key_" + secrets.token_hex(4)
    reference = TokenBudgets(StoppedClock(1_800_000_030.0))
    outcomes: dict[str, list[object]] = {"redis": [], "memory": []}
    for name, book, other in (("redis", first.budgets, second.budgets), ("memory", reference, reference)):
        holds = [await book.hold(key, 100, 60), await other.hold(key, 100, 60)]
        try:
            await book.hold(key, 100, 60)
        except GatewayError as exc:
            outcomes[name].append(exc.message)
        await book.settle(holds[0], 30)
        await other.settle(holds[1], 30)
        try:
            await other.settle(await other.hold(key, 100, 60), 0)
            outcomes[name].append("admitted")
        except GatewayError as exc:
            outcomes[name].append(exc.message)
        await book.settle(await book.hold(key, 100, 50), 50)
        try:
            await book.hold(key, 100, 1)
        except GatewayError as exc:
            outcomes[name].append((exc.reason, exc.message, exc.retry_after))
    assert outcomes["redis"] == outcomes["memory"]
    assert len(outcomes["redis"]) == 3


async def test_redis_down_refuses_calls_at_once_and_recovers_by_itself(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    held = await state.ledger.reserve(account, 100, "Add credits.")
    assert redis_server.process is not None
    redis_server.process.send_signal(19)  # SIGSTOP: answers nothing, as a wedged Redis
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await state.ledger.reserve(account, 100, "Add credits.")
        assert caught.value.reason is Reason.SHARED_STATE_UNAVAILABLE and caught.value.http_status == 503
        assert caught.value.retry_after_header == "2"
        assert time.monotonic() - started < 1.5
        # Giving back never fails: the charge is made against the hold, Redis told later.
        assert await state.ledger.settle(held, 60) == 60
    finally:
        redis_server.process.send_signal(18)  # SIGCONT
    await _until(lambda: state.link.ready, 10)
    await state.ledger.reserve(account, 940, "Add credits.")
    with pytest.raises(GatewayError) as short:
        await state.ledger.reserve(account, 1, "Add credits.")
    assert short.value.reason is Reason.INSUFFICIENT_CREDITS


async def test_a_restarted_redis_is_rebuilt_from_the_store_and_the_live_holds(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    first, second = await processes(2)
    account = await _account(store, 1000)
    key = "key_" + secrets.token_hex(4)
    reservation = await first.ledger.reserve(account, 300, "Add credits.")
    unwritten = await second.ledger.reserve(account, 200, "Add credits.")
    await second.ledger.settle(unwritten, 150)  # charged, row not written yet
    token_hold = await first.budgets.hold(key, 1000, 400)
    redis_server.restart()
    with pytest.raises(GatewayError) as caught:
        await first.ledger.reserve(account, 1, "Add credits.")
    assert caught.value.reason is Reason.SHARED_STATE_UNAVAILABLE
    waited = await _until(lambda: first.link.ready and second.link.ready, 10)
    assert waited >= QUIET * 0.8  # the rebuild waited its quiet time before reading the store
    # Balance 1000 from the store, less 300 reserved by one process and 150 unwritten in the other.
    await second.ledger.reserve(account, 550, "Add credits.")
    with pytest.raises(GatewayError) as short:
        await first.ledger.reserve(account, 1, "Add credits.")
    assert short.value.reason is Reason.INSUFFICIENT_CREDITS
    assert await first.ledger.settle(reservation, 300) == 300
    await first.budgets.settle(token_hold, 10)
    # The held tokens came back with the first process's registration, and went with its settle.
    await second.budgets.hold(key, 1000, 900)


async def test_a_charge_written_across_a_rebuild_is_counted_by_one_more_rebuild(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    await state.ledger.settle(await state.ledger.reserve(account, 100, "Add credits."), 100)
    charges = {account: 100}
    await state.ledger.writing(charges)  # moved in Redis, then Redis dies before the store has it
    redis_server.restart()
    with pytest.raises(GatewayError):
        await state.ledger.reserve(account, 1, "Add credits.")
    await _until(lambda: state.link.ready, 10)  # rebuilt from a store that did not have the charge yet
    await store.record_calls([], {}, charges)  # the slow write ends after the rebuild read the store
    state.ledger.charges_written(charges)
    await asyncio.sleep(0.05)
    await _until(lambda: state.link.ready, 10)  # rebuilt once more
    await state.ledger.reserve(account, 900, "Add credits.")
    with pytest.raises(GatewayError) as short:
        await state.ledger.reserve(account, 1, "Add credits.")
    assert short.value.reason is Reason.INSUFFICIENT_CREDITS


async def test_credits_the_operator_adds_reach_redis(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    from modelway.scale import shared_credits_added

    (state,) = await processes(1)
    account = await _account(store, 100)
    await state.ledger.reserve(account, 100, "Add credits.")  # known to Redis now: 100, all held
    assert await store.add_credits(account, 500) == 600
    assert await shared_credits_added(SharedConfig(redis_url=redis_server.url), account, 500)
    await state.ledger.reserve(account, 500, "Add credits.")
    with pytest.raises(GatewayError):
        await state.ledger.reserve(account, 1, "Add credits.")
