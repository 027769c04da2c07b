"""Give-backs and installs the third review found losing counts or money, against a real redis-server:
budget settles whose reply never came, and a rebuild installed while an operator's credit change is
under way."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState, scripts
from tests.real.redis import RedisServer
from tests.shared.links import Processes, until, warm


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to read what Redis really holds (and to cut the others' connections)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def _over_budget(state: SharedState, key: str, budget: int, tokens: int) -> bool:
    try:
        await state.budgets.hold(key, budget, tokens)
    except GatewayError as exc:
        assert exc.reason is Reason.BUDGET_EXCEEDED, exc
        return True
    return False


async def _used(raw: aioredis.Redis, state: SharedState, key: str) -> int:
    found = [name async for name in raw.scan_iter(match=f"mw:{state.link.epoch}:u:*:{key}")]
    return sum([int(await raw.get(name) or 0) for name in found])


async def test_a_budget_settle_cut_off_with_its_connection_is_counted_once_redis_answers(
    processes: Processes, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    key = "key_" + secrets.token_hex(4)
    hold = await state.budgets.hold(key, 1000, 700)
    before = state.link.epoch
    # Redis closes every connection (idle timeout, a proxy, failover): the settle's reply never comes.
    await raw.client_kill_filter(_type="normal", skipme=True)
    await state.budgets.settle(hold, 700)
    await until(lambda: state.link.ready and state.link.in_step, 10)
    assert state.link.epoch == before  # the same epoch: no rebuild reads the day's use again
    assert await _used(raw, state, key) == 700
    # Admitted while used + held is under the budget: 700 used, then 300 held, and nothing more.
    assert not await _over_budget(state, key, 1000, 300)
    assert await _over_budget(state, key, 1000, 1)


async def test_a_budget_settle_refused_after_the_process_was_reaped_is_counted_once(
    processes: Processes, raw: aioredis.Redis
) -> None:
    first, other = await processes(2)
    key = "key_" + secrets.token_hex(4)
    epoch = first.link.epoch
    await first.budgets.settle(await first.budgets.hold(key, 1000, 100), 100)  # counted as it should
    hold = await first.budgets.hold(key, 1000, 700)
    # The first process looked dead for a moment (its alive key lapsed): another one reaped it.
    await raw.delete(f"mw:{epoch}:alive:{first.link.proc}")
    assert (await other.link.script(scripts.REAP)(args=[epoch]))[0] == "OK"
    await first.budgets.settle(hold, 700)  # refused UNREGISTERED
    await until(lambda: first.link.ready and first.link.in_step, 10)
    assert first.link.epoch == epoch
    assert await _used(raw, first, key) == 800
    assert not await _over_budget(other, key, 1000, 200)
    assert await _over_budget(other, key, 1000, 1)


async def test_a_budget_settle_that_ran_after_its_reply_timed_out_is_not_counted_twice(
    processes: Processes, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    link = state.link
    key = "key_" + secrets.token_hex(4)
    hold = await state.budgets.hold(key, 1000, 300)
    await warm(state)
    epoch = link.epoch
    # Redis takes the settle but answers only after the timeout: it ran, and its reply was lost.
    await raw.client_pause(600, all=True)
    await state.budgets.settle(hold, 300)
    assert not link.in_step
    await until(lambda: link.ready and link.in_step, 10)
    assert link.epoch == epoch
    assert await _used(raw, state, key) == 300
