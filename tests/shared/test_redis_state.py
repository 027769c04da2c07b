"""The Lua scripts' semantics against a real redis-server: same rules as the in-process state, atomic races."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from modelway.config import SharedConfig
from modelway.core.budgets import TokenBudgets
from modelway.core.ledger import Ledger
from modelway.core.limits import LimitRule, RateLimiter
from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState, open_shared_state, scripts
from modelway.store import SqliteStore
from tests.real.redis import RedisServer
from tests.shared.links import QUIET, Processes, StoppedClock
from tests.shared.links import new_account as _account
from tests.shared.links import nothing as _nothing
from tests.shared.links import until as _until
from tests.shared.links import warm as _warm


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
    from modelway.scale import Told, shared_add_credits

    (state,) = await processes(1)
    account = await _account(store, 100)
    await state.ledger.reserve(account, 100, "Add credits.")  # known to Redis now: 100, all held
    shared = await shared_add_credits(SharedConfig(redis_url=redis_server.url), store, account, 500)
    assert shared.change is not None and shared.change.after == 600
    assert shared.told is Told.NOW
    await state.ledger.reserve(account, 500, "Add credits.")
    with pytest.raises(GatewayError):
        await state.ledger.reserve(account, 1, "Add credits.")


# Faults: slow replies, cancelled calls, a Redis restarted from a snapshot, operator credits.

_BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000000
return 1
"""


async def _redis_busy(server: RedisServer, seconds: float) -> asyncio.Task[object]:
    """Another client runs a script that keeps the real redis-server busy for `seconds`: every
    other command waits behind it, as on a loaded or stalled Redis."""
    client = aioredis.Redis.from_url(server.url)

    async def run() -> object:
        try:
            return await client.eval(_BUSY, 0, seconds)  # type: ignore[misc]
        finally:
            await client.aclose()

    task = asyncio.create_task(run())
    await asyncio.sleep(0.1)  # the script is running
    return task


async def test_a_reply_slower_than_the_timeout_never_runs_the_script_twice(
    processes: Processes, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    rule = LimitRule("key:" + secrets.token_hex(4), 2, "Rate limit reached")
    await _warm(state)
    # Busy for 0.4 s after the call is sent: its reply comes after the 0.3 s timeout, but a
    # retry on a new connection would be answered in time, and count the call again.
    busy = await _redis_busy(redis_server, 0.5)
    with pytest.raises(GatewayError) as caught:
        await state.limits.acquire(rule)  # sent, then given up on: it runs once Redis is free
    assert caught.value.reason is Reason.SHARED_STATE_UNAVAILABLE
    await busy
    # The refused call is not counted at all: before the next take the process registers again what
    # it counted this minute (absolute), which undoes the count Redis made for the refused call.
    (counted,) = await state.limits.acquire(rule)
    assert counted.remaining == 1
    (counted,) = await state.limits.acquire(rule)
    assert counted.remaining == 0
    with pytest.raises(GatewayError) as limited:
        await state.limits.acquire(rule)
    assert limited.value.reason is Reason.RATE_LIMITED


async def test_a_reservation_cancelled_while_redis_runs_it_leaves_no_hold(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    await state.link.seed(account)
    await _warm(state)
    busy = await _redis_busy(redis_server, 0.8)
    call = asyncio.create_task(state.ledger.reserve(account, 400, "Add credits."))
    await asyncio.sleep(0.1)  # the script is sent and waits behind the busy one
    call.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await call
    await busy  # Redis ran the reservation nobody will give back

    async def whole_balance() -> bool:
        try:
            await state.ledger.settle(await state.ledger.reserve(account, 1000, "Add credits."), 0)
        except GatewayError:
            return False
        return True

    started = time.monotonic()
    while not await whole_balance():
        assert time.monotonic() - started < 3, "the cancelled call's 400 stayed held"
        await asyncio.sleep(0.05)


async def test_a_settle_cancelled_while_redis_runs_it_still_gives_the_hold_back(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    account = await _account(store, 1000)
    reservation = await state.ledger.reserve(account, 400, "Add credits.")
    await _warm(state)
    busy = await _redis_busy(redis_server, 0.8)
    call = asyncio.create_task(state.ledger.settle(reservation, 0))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await busy
    # The process registers what it holds after a rebuild: the cancelled settle must not be among it.
    redis_server.restart()
    await asyncio.sleep(1.2)
    await _until(lambda: state.link.ready, 10)
    await state.ledger.reserve(account, 1000, "Add credits.")


@pytest.fixture
async def persistent_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persist=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_redis_restarted_from_a_snapshot_is_rebuilt_from_the_store(
    persistent_redis: RedisServer, store: SqliteStore
) -> None:
    config = SharedConfig(redis_url=persistent_redis.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.3)
    state = open_shared_state(config, store, StoppedClock(1_800_000_030.0), _nothing)
    await state.start()
    try:
        await _until(lambda: state.link.ready, 10)
        account = await _account(store, 1000)
        await state.link.seed(account)
        snapshot = aioredis.Redis.from_url(persistent_redis.url)
        await snapshot.save()
        await snapshot.aclose()
        # 600 charged and written after the snapshot: the store has 400.
        await state.ledger.settle(await state.ledger.reserve(account, 600, "Add credits."), 600)
        charges = {account: 600}
        await state.ledger.writing(charges)
        await store.record_calls([], {}, charges)
        state.ledger.charges_written(charges)
        before = state.link.epoch
        persistent_redis.restart()  # killed; comes back with the snapshot's marker, balance and holds
        await _until(lambda: state.link.ready and state.link.epoch != before, 10)
        with pytest.raises(GatewayError) as short:
            await state.ledger.reserve(account, 401, "Add credits.")
        assert short.value.reason is Reason.INSUFFICIENT_CREDITS
        await state.ledger.reserve(account, 400, "Add credits.")
    finally:
        await state.close()


async def test_credits_the_operator_removes_below_zero_reach_redis_as_the_store_applied_them(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    from modelway.scale import Told, shared_add_credits

    (state,) = await processes(1)
    config = SharedConfig(redis_url=redis_server.url)
    account = await _account(store, 100)
    await state.link.seed(account)
    removed = await shared_add_credits(config, store, account, -500)
    assert removed.change is not None
    assert (removed.change.before, removed.change.after, removed.change.applied) == (100, 0, -100)
    assert removed.told is Told.NOW
    added = await shared_add_credits(config, store, account, 100)
    assert added.told is Told.NOW
    await state.ledger.reserve(account, 100, "Add credits.")
    with pytest.raises(GatewayError) as short:
        await state.ledger.reserve(account, 1, "Add credits.")
    assert short.value.reason is Reason.INSUFFICIENT_CREDITS


async def test_credits_added_to_an_account_redis_does_not_know_survive_a_racing_seed(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    from modelway.scale import Told, shared_add_credits

    (state,) = await processes(1)
    account = await _account(store, 100)
    read_before = (await store.balances())[account]  # a server seeding the account read the store...
    added = await shared_add_credits(SharedConfig(redis_url=redis_server.url), store, account, 500)
    assert added.told is Told.NOW
    seed = state.link.redis.register_script(scripts.CREDIT_SEED)
    await seed(args=[state.link.epoch, account, read_before])  # ...and writes what it read only now
    await state.ledger.reserve(account, 600, "Add credits.")


async def test_credits_added_while_redis_has_no_state_tell_the_operator_they_count_after_the_rebuild(
    redis_server: RedisServer, store: SqliteStore
) -> None:
    from modelway.scale import Told, shared_add_credits

    redis_server.restart()  # empty, and no server running to rebuild it
    account = await _account(store, 100)
    added = await shared_add_credits(SharedConfig(redis_url=redis_server.url), store, account, 50)
    assert added.change is not None and added.change.after == 150
    assert added.told is Told.REBUILT


_HOLDER = """
import asyncio, sys, time
from modelway.config import SharedConfig
from modelway.shared import open_shared_state
from modelway.store import SqliteStore

class Stopped:
    def now(self) -> float:
        return 1_800_000_030.0

    def monotonic(self) -> float:
        return time.monotonic()


async def main() -> None:
    async def nothing() -> None:
        return None

    async with SqliteStore(sys.argv[2]) as store:
        config = SharedConfig(redis_url=sys.argv[1], rebuild_quiet_seconds=0.3, process_timeout_seconds=1.0)
        state = open_shared_state(config, store, Stopped(), nothing)
        await state.start()
        while not state.link.ready:
            await asyncio.sleep(0.02)
        await state.ledger.reserve(sys.argv[3], int(sys.argv[4]), "Add credits.")
        await state.budgets.hold(sys.argv[5], 1000, 700)
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_what_a_crashed_process_held_is_released(
    redis_server: RedisServer, store: SqliteStore, tmp_path: Path
) -> None:
    config = SharedConfig(
        redis_url=redis_server.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.3, process_timeout_seconds=1.0
    )
    state = open_shared_state(config, store, StoppedClock(1_800_000_030.0), _nothing)
    await state.start()
    account = await _account(store, 1000)
    key = "key_" + secrets.token_hex(4)
    db_path = str(tmp_path / "shared.db")
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, redis_server.url, db_path, account, "400", key, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        await _until(lambda: state.link.ready, 10)
        with pytest.raises(GatewayError) as short:
            await state.ledger.reserve(account, 1000, "Add credits.")
        assert short.value.reason is Reason.INSUFFICIENT_CREDITS
        holder.kill()  # kill -9: it never gives back its 400 credits and 700 tokens
        await holder.wait()

        async def whole() -> bool:
            try:
                await state.ledger.reserve(account, 1000, "Add credits.")
                await state.budgets.hold(key, 1000, 1000)
            except GatewayError:
                return False
            return True

        started = time.monotonic()
        while not await whole():
            assert time.monotonic() - started < 8, "the crashed process's holds stayed"
            await asyncio.sleep(0.1)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await state.close()


async def test_key_reloads_failing_on_an_unreachable_store_keep_listening_and_say_so_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from modelway.shared.keys import KeyChanges, announce_key_change
    from modelway.store import StoreUnavailable

    reloads: list[float] = []

    async def reload() -> None:
        reloads.append(time.monotonic())
        if len(reloads) <= 3:
            raise StoreUnavailable()  # PostgreSQL down: the reload of the key directory fails

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    changes = KeyChanges(client, "listener", reload)
    changes.start()
    try:
        await _until(lambda: len(reloads) == 1, 5)  # subscribed, and read what changed meanwhile
        for expected in (2, 3, 4):
            await announce_key_change(client, "other")
            await _until(lambda n=expected: len(reloads) >= n, 5)  # type: ignore[misc]
        assert reloads[3] - reloads[0] < 2  # each message reloaded at once: never unsubscribed meanwhile
    finally:
        await changes.close()
        await client.aclose()
    records = [record for record in caplog.records if record.name == "modelway.shared.keys"]
    assert len(records) == 1 and records[0].exc_info is None, [record.getMessage() for record in records]
