"""A slow Redis, a restarted Redis and new accounts, against a real redis-server: what is refused,
what is counted afterwards, and what the store is asked."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from modelway.config import SharedConfig
from modelway.core.budgets import day_start
from modelway.core.limits import LimitRule, window_of
from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState, open_shared_state
from modelway.shared.link import _never_ran
from modelway.store import SqliteStore
from tests.real.redis import RedisServer
from tests.shared.links import QUIET, Processes, StoppedClock, new_account, nothing, until, warm

NOW = 1_800_000_030.0
PAUSE = 1.2  # longer than the links' timeout_seconds (0.3)


async def _redis_hash(server: RedisServer, key: str) -> dict[str, str]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        return await client.hgetall(key)  # type: ignore[no-any-return,misc]
    finally:
        await client.aclose()


async def _pause(server: RedisServer, seconds: float) -> None:
    """CLIENT PAUSE ALL: Redis takes every other client's commands and answers none for `seconds`."""
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.client_pause(int(seconds * 1000), all=True)
    finally:
        await client.aclose()


async def test_a_pause_longer_than_the_timeout_refuses_only_the_calls_in_flight_and_leaks_nothing(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    (state,) = await processes(1)
    link = state.link
    account = await new_account(store, 1000)
    key = "key_" + secrets.token_hex(4)
    rule = LimitRule("key:" + secrets.token_hex(4), 5, "Rate limit reached")
    kept = await state.ledger.reserve(account, 100, "Add credits.")
    charged = await state.ledger.reserve(account, 300, "Add credits.")
    assert await state.ledger.settle(charged, 300) == 300  # charged, its row not written yet
    await state.budgets.hold(key, 1000, 50)
    await state.limits.acquire(rule)
    await warm(state)
    epoch = link.epoch

    await _pause(redis_server, PAUSE)
    paused = time.monotonic()
    # In flight while Redis answers nothing: a reservation, a token hold, a rate-limit count, and the
    # usage writer's balance move of the 300 charged. Each is sent, may run later, and is refused.
    in_flight = await asyncio.gather(
        state.ledger.reserve(account, 200, "Add credits."),
        state.budgets.hold(key, 1000, 400),
        state.limits.acquire(rule),
        state.ledger.writing({account: 300}),
        return_exceptions=True,
    )
    refused_after = time.monotonic() - paused
    for outcome in in_flight:
        assert isinstance(outcome, GatewayError) and outcome.reason is Reason.SHARED_STATE_UNAVAILABLE, outcome
        assert outcome.retry_after_header == "2"
    assert refused_after < PAUSE  # refused when the timeout passed, not when Redis answered
    assert link.epoch == epoch  # slow is not gone: the epoch stands

    await asyncio.sleep(max(0.0, PAUSE + 0.1 - (time.monotonic() - paused)))
    # Redis answers again: the next call is admitted at once, in the same epoch (no rebuild), and
    # the refused count was undone before it (5 - 2 counted: the first and this one).
    started = time.monotonic()
    (after,) = await state.limits.acquire(rule)
    admitted_in = time.monotonic() - started
    print(f"in flight: {len(in_flight)} refused after {refused_after:.2f}s; next call admitted in {admitted_in:.3f}s")
    assert after.remaining == 3
    assert admitted_in < 1.0, admitted_in
    assert link.epoch == epoch and link.in_step

    # Redis holds exactly what the process holds: 100 reserved and 300 charged, not the refused 200;
    # the balance is whole (the refused move was undone, or never made); 50 tokens held, not 450.
    account_hash = await _redis_hash(redis_server, f"mw:{epoch}:a:{account}")
    assert (int(account_hash["bal"]), int(account_hash["held"])) == (1000, 400), account_hash
    assert int(account_hash[f"h:{link.proc}"]) == link.credits_held[account] == 400
    key_hash = await _redis_hash(redis_server, f"mw:{epoch}:k:{key}")
    assert int(key_hash["held"]) == link.tokens_held[key] == 50, key_hash
    window = window_of(NOW)[0]
    counts = await _redis_hash(redis_server, f"mw:rh:{window}:{rule.scope}")
    assert int(counts["n"]) == 2, counts

    # The write goes through now, and exactly the rest of the balance is spendable.
    await state.ledger.writing({account: 300})
    await store.record_calls([], {}, {account: 300})
    state.ledger.charges_written({account: 300})
    assert await state.ledger.settle(kept, 0) == 0
    await state.ledger.reserve(account, 700, "Add credits.")
    with pytest.raises(GatewayError) as short:
        await state.ledger.reserve(account, 1, "Add credits.")
    assert short.value.reason is Reason.INSUFFICIENT_CREDITS
    assert link.epoch == epoch


async def test_no_free_connection_in_time_is_told_apart_from_a_reply_that_never_came(
    redis_server: RedisServer,
) -> None:
    # redis-py's BlockingConnectionPool, as the link uses it, with its one connection taken.
    pool = aioredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0.1)
    taken = await pool.get_connection()
    try:
        with pytest.raises(RedisConnectionError) as exhausted:
            await pool.get_connection()
        assert _never_ran(exhausted.value)  # nothing was sent: only this call is refused
    finally:
        await pool.release(taken)
        await pool.disconnect()
    slow = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.2)
    await _pause(redis_server, 0.6)
    try:
        with pytest.raises(Exception) as timed_out:
            await slow.incr("mw:test:" + secrets.token_hex(4))
        assert not _never_ran(timed_out.value)  # sent: it may run, so the process must re-register
    finally:
        await asyncio.sleep(0.6)
        await slow.aclose()


async def test_after_a_restart_each_process_registers_what_it_counted_this_minute_and_its_unwritten_tokens(
    processes: Processes, store: SqliteStore, redis_server: RedisServer
) -> None:
    first, second = await processes(2)
    key = "key_" + secrets.token_hex(4)
    rule = LimitRule("key:" + secrets.token_hex(4), 10, "Rate limit reached")
    for state in (first, first, first, second, second):
        await state.limits.acquire(rule)
    # A call of the first process used 300 tokens; its usage row is queued, not in the store yet.
    await first.budgets.settle(await first.budgets.hold(key, 1000, 400), 300)
    today = day_start(NOW)
    first.link.count_unwritten(lambda since: {key: 300} if since <= today else {})

    redis_server.restart()  # empty: the counters and the day's use are gone
    with pytest.raises(GatewayError):
        await first.limits.acquire(rule)
    await until(lambda: first.link.ready and second.link.ready, 10)
    epoch = first.link.epoch

    # The minute's count is back (5), whichever process asks: exactly 5 more are admitted in all.
    admitted = 0
    for index in range(8):
        try:
            await (first, second)[index % 2].limits.acquire(rule)
            admitted += 1
        except GatewayError as exc:
            assert exc.reason is Reason.RATE_LIMITED
    assert admitted == 5
    # The day's use is the store's (nothing written) plus the 300 unwritten: 700 more fit, no more.
    used = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await used.get(f"mw:{epoch}:u:{today}:{key}") == "300"
    finally:
        await used.aclose()
    await second.budgets.hold(key, 1000, 700)
    with pytest.raises(GatewayError) as over:
        await first.budgets.hold(key, 1000, 1)
    assert over.value.reason is Reason.BUDGET_EXCEEDED


async def test_a_rebuilt_state_takes_nothing_until_every_live_process_registered_its_counts(
    processes: Processes, redis_server: RedisServer
) -> None:
    first, second = await processes(2)
    rule = LimitRule("key:" + secrets.token_hex(4), 5, "Rate limit reached")
    for state in (first, first, first, second, second):
        await state.limits.acquire(rule)  # the key's 5 this minute, 2 of them counted by the idle second
    redis_server.restart()
    with pytest.raises(GatewayError):
        await first.limits.acquire(rule)  # the first notices at once; the second, idle, on its next check
    waited = await until(lambda: first.link.ready, 10)
    # The first rebuilt the state and registered; the epoch opened only after the second had too, so its
    # 2 are counted before anything is taken: the first is refused, with the key's own 429.
    with pytest.raises(GatewayError) as limited:
        await first.limits.acquire(rule)
    assert limited.value.reason is Reason.RATE_LIMITED
    assert waited >= QUIET + first.link.opening_seconds * 0.8, waited
    print(f"rebuilt and open {waited:.2f}s after the restart was noticed")


class CountingStore(SqliteStore):
    """A real SQLite store that counts the balance reads (what seeding costs the store)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.one_reads = 0
        self.all_reads = 0

    async def balance(self, account_id: str) -> int | None:
        self.one_reads += 1
        await asyncio.sleep(0.05)  # a slow store: every first call arrives while the read runs
        return await super().balance(account_id)

    async def balances(self) -> dict[str, int]:
        self.all_reads += 1
        return await super().balances()


@pytest.fixture
async def counting(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[CountingStore, SharedState]]:
    async with CountingStore(tmp_path / "counting.db") as store:
        config = SharedConfig(redis_url=redis_server.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.5)
        state = open_shared_state(config, store, StoppedClock(NOW), nothing)
        await state.start()
        try:
            await until(lambda: state.link.ready, 10)
            yield store, state
        finally:
            await state.close()


async def test_the_concurrent_first_calls_of_a_new_account_seed_it_once_and_spend_exactly(
    counting: tuple[CountingStore, SharedState],
) -> None:
    store, state = counting
    account = await new_account(store, 60 * 7)
    all_reads = store.all_reads

    async def reserve() -> bool:
        try:
            await state.ledger.reserve(account, 7, "Add credits.")
        except GatewayError as exc:
            assert exc.reason is Reason.INSUFFICIENT_CREDITS
            return False
        return True

    results = await asyncio.gather(*(reserve() for _ in range(120)))
    assert sum(results) == 60
    assert store.one_reads == 1  # one row read for 120 first calls
    assert store.all_reads == all_reads  # and never every balance


async def test_a_redis_that_is_down_is_retried_at_a_pace_not_in_a_loop(tmp_path: Path, store: SqliteStore) -> None:
    """Each failed round of upkeep wakes the upkeep again: with Redis down (connections refused at
    once) a process once spun a core retrying, for as long as Redis stayed away."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    config = SharedConfig(redis_url=server.url, rebuild_quiet_seconds=QUIET, timeout_seconds=0.3)
    state = open_shared_state(config, store, StoppedClock(1_800_000_030.0), nothing)
    await state.start()
    try:
        await until(lambda: state.link.ready, 10)
        server.stop()
        await until(lambda: state.link.epoch is None, 10)
        used = time.process_time()
        await asyncio.sleep(2.0)
        used = time.process_time() - used
        assert used < 0.4, f"{used:.2f} s of CPU in 2 s while Redis was down"
        server.start()
        await until(lambda: state.link.ready, 15)
    finally:
        await state.close()
        server.stop()


async def test_after_an_empty_restart_the_opening_also_waits_for_reconnects_and_a_late_process_says_so(
    processes: Processes,
    store: SqliteStore,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, late = await processes(2)
    account = await new_account(store, 1000)
    await late.ledger.reserve(account, 800, "Add credits.")
    # The late process registers 2 s late (a blocked event loop, a slow link, another host's lag): the
    # one timing seam of this test, as in test_redis_races.
    alive = late.link._alive

    async def alive_late(at: str) -> None:
        await asyncio.sleep(2.0)
        await alive(at)

    monkeypatch.setattr(late.link, "_alive", alive_late)
    redis_server.restart()
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        while (epoch := await client.get("mw:epoch")) is None:
            await asyncio.sleep(0.01)
        opening_ms = await client.pttl(f"mw:{epoch}:opening")
    finally:
        await client.aclose()
    # max(1 s, 1 s less the quiet time plus 0.3 s) + the 0.3 s timeout, not the 1.0 s of a forced rebuild.
    assert opening_ms > (first.link.restart_opening_seconds - 0.2) * 1000, opening_ms
    assert first.link.restart_opening_seconds == pytest.approx(1.3)
    await until(lambda: late.link.ready, 10)
    assert "after its opening closed, with credits held on 1 account(s)" in caplog.text
