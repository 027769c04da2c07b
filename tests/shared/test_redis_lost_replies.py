"""Give-backs and installs the third review found losing counts or money, against a real redis-server:
budget settles whose reply never came, and a rebuild installed while an operator's credit change is
under way."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
import redis.asyncio as aioredis

from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState, scripts
from modelway.store import Store
from tests.shared.links import Processes, new_account, until, used_today, warm
from tests.shared.links import refused as _refused


async def _over_budget(state: SharedState, key: str, budget: int, tokens: int) -> bool:
    try:
        await state.budgets.hold(key, budget, tokens)
    except GatewayError as exc:
        assert exc.reason is Reason.BUDGET_EXCEEDED, exc
        return True
    return False


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
    assert await used_today(raw, state, key) == 700
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
    assert await used_today(raw, first, key) == 800
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
    assert await used_today(raw, state, key) == 300


async def _cli_adds(state: SharedState, store: Store, account: str, change: str, amount: int) -> str:
    """The CLI's side of a credit change it announced (CREDIT_INTENT): the commit, then the word."""
    after = await store.add_credits(account, amount)
    assert after is not None
    reply = await state.link.script(scripts.CREDIT_ADD)(args=[account, amount, after.after, change])
    return str(reply[0])


async def test_no_rebuild_is_installed_while_the_operator_changes_credits_so_calls_under_way_are_billed(
    processes: Processes, store: Store
) -> None:
    (state,) = await processes(1)
    link = state.link
    account = await new_account(store, 1000)
    under_way = await state.ledger.reserve(account, 500, "Add credits.")
    charged = await state.ledger.settle(await state.ledger.reserve(account, 200, "Add credits."), 200)
    assert charged == 200  # charged, its row not written yet
    # The CLI announced a change, then the state is rebuilt (a reaped worker, a doubt, a lapse).
    await link.script(scripts.CREDIT_INTENT)(args=[account, "cli1", 60_000])
    await link.script(scripts.EPOCH_FORCE)(args=[link.epoch])
    await asyncio.sleep(1.5)  # several rebuild rounds (quiet time 0.3 s)
    assert not link.ready  # no state installed while the store read may or may not have the change
    # The call under way ends meanwhile: charged what it cost (within its reservation), not 0.
    assert await state.ledger.settle(under_way, 300) == 300
    with pytest.raises(GatewayError) as refused:
        await state.ledger.writing({account: 200})  # no balance to move it in: the row waits
    assert refused.value.reason is Reason.SHARED_STATE_UNAVAILABLE
    assert await _cli_adds(state, store, account, "cli1", 100) == "NOEPOCH"
    await until(lambda: link.ready, 10)
    # The store has 1100; 500 charged and not written: 600 spendable.
    await state.ledger.writing({account: 200})
    await store.record_calls([], {}, {account: 200})
    state.ledger.charges_written({account: 200})
    await link.script(scripts.CREDIT_INTENT)(args=[account, "cli2", 60_000])
    assert await _cli_adds(state, store, account, "cli2", 100) == "OK"
    assert not await _refused(state, account, 700)
    assert await _refused(state, account, 1)


async def test_a_dead_clis_intent_holds_the_rebuild_back_only_until_it_lapses(
    processes: Processes, store: Store
) -> None:
    (state,) = await processes(1)
    link = state.link
    account = await new_account(store, 1000)
    under_way = await state.ledger.reserve(account, 500, "Add credits.")
    before = link.epoch
    announced = time.monotonic()
    await link.script(scripts.CREDIT_INTENT)(args=[account, "dead", 1500])
    await store.add_credits(account, -400)  # committed; the CLI died before telling Redis
    await link.script(scripts.EPOCH_FORCE)(args=[before])
    await until(lambda: link.ready and link.epoch != before, 10)
    assert time.monotonic() - announced >= 1.5  # installed only once the intent lapsed
    assert await state.ledger.settle(under_way, 300) == 300
    assert not await _refused(state, account, 300)  # 600 in the store, 300 charged
    assert await _refused(state, account, 1)


async def test_an_account_hash_without_a_balance_never_serves_free_nor_makes_a_balance_up(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    link = state.link
    account = await new_account(store, 1000)
    under_way = await state.ledger.reserve(account, 500, "Add credits.")
    epoch = link.epoch
    await raw.hdel(f"mw:{epoch}:a:{account}", "bal")  # a state that lost a balance (never expected)
    assert await state.ledger.settle(under_way, 300) == 300
    with pytest.raises(GatewayError):
        await state.ledger.writing({account: 300})  # refused: the state is rebuilt from the store
    assert await raw.hget(f"mw:{epoch}:a:{account}", "bal") is None
    await until(lambda: link.ready and link.epoch != epoch, 10)
    await state.ledger.writing({account: 300})
    await store.record_calls([], {}, {account: 300})
    state.ledger.charges_written({account: 300})
    assert not await _refused(state, account, 700)
    assert await _refused(state, account, 1)
