"""A call's token hold and credit reservation taken and settled in one script each way (CALL_ADMIT,
CALL_SETTLE), against a real redis-server: the same rules, refusals and exactness as the budget and
the ledger asked in turn, in two round trips fewer."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis

from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState
from modelway.store import Store
from tests.shared.links import Processes, new_account, until, used_today, warm


async def _held(raw: aioredis.Redis, state: SharedState, account: str, key: str) -> tuple[int, int]:
    """Credits and tokens every process holds in Redis for the account and the key."""
    prefix = f"mw:{state.link.epoch}:"
    credits = await raw.hget(prefix + "a:" + account, "held")
    tokens = await raw.hget(prefix + "k:" + key, "held")
    return int(credits or 0), int(tokens or 0)


async def _account_and_key(store: Store, credits: int) -> tuple[str, str]:
    """A new account (created after the rebuild: its first call seeds its balance) and a key id."""
    return await new_account(store, credits), "key_" + secrets.token_hex(4)


async def _refusal(state: SharedState, account: str, key: str, budget: int, tokens: int, cost: int) -> Reason | None:
    try:
        await state.holds.take(key, budget, tokens, account, cost, "Add credits.")
    except GatewayError as exc:
        return exc.reason
    return None


async def test_a_call_holds_its_tokens_and_credits_until_it_settles(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    account, key = await _account_and_key(store, 1000)
    await state.holds.take(key, 5000, 10, account, 1, "Add credits.")  # seeds the new account's balance
    hold, reservation = await state.holds.take(key, 5000, 600, account, 400, "Add credits.")
    assert await _held(raw, state, account, key) == (401, 610)
    assert state.ledger.available(account) == 599
    assert state.link.credits_held[account] == 401 and state.link.tokens_held[key] == 610

    assert await state.holds.settle(hold, 250, reservation, 300) == 300
    # The charge stays held (not written yet); the tokens are the day's use now.
    assert await _held(raw, state, account, key) == (301, 10)
    assert await used_today(raw, state, key) == 250
    assert state.ledger.available(account) == 699
    assert state.link.credits_held[account] == 301 and state.link.tokens_held[key] == 10


async def test_a_charge_is_never_more_than_the_account_has(processes: Processes, store: Store) -> None:
    (state,) = await processes(1)
    account, key = await _account_and_key(store, 1000)
    hold, reservation = await state.holds.take(key, 5000, 100, account, 900, "Add credits.")
    assert await state.holds.settle(hold, 100, reservation, 5000) == 1000  # what it had, not 5000
    assert state.ledger.available(account) == 0
    assert await _refusal(state, account, key, 5000, 1, 1) is Reason.INSUFFICIENT_CREDITS


@pytest.mark.parametrize(
    ("budget", "cost", "refused"),
    [
        (500, 100, Reason.BUDGET_EXCEEDED),  # 300 used + 200 held of 500
        (5000, 801, Reason.INSUFFICIENT_CREDITS),  # 1000 - 200 held
        (500, 801, Reason.BUDGET_EXCEEDED),  # both: the budget is said first, as in one process
    ],
)
async def test_a_call_refused_for_its_budget_or_its_credits_holds_neither(
    processes: Processes, store: Store, raw: aioredis.Redis, budget: int, cost: int, refused: Reason
) -> None:
    (state,) = await processes(1)
    account, key = await _account_and_key(store, 1000)
    hold, reservation = await state.holds.take(key, 5000, 300, account, 200, "Add credits.")
    await state.holds.settle(hold, 300, reservation, 0)
    await state.holds.take(key, 5000, 200, account, 200, "Add credits.")  # under way
    assert await _refusal(state, account, key, budget, 50, cost) is refused
    assert await _held(raw, state, account, key) == (200, 200)
    assert (state.link.credits_held[account], state.link.tokens_held[key]) == (200, 200)


async def test_racing_calls_from_two_processes_get_exactly_the_credits_and_tokens_there_are(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    first, second = await processes(2)
    account, key = await _account_and_key(store, 500)
    await asyncio.gather(warm(first), warm(second))
    # Credits for 5 calls of 100, a budget for 8 of 40 tokens: 5 are admitted, whoever asks.
    outcomes = await asyncio.gather(*(_refusal(state, account, key, 320, 40, 100) for state in (first, second) * 10))
    assert outcomes.count(None) == 5
    assert outcomes.count(Reason.INSUFFICIENT_CREDITS) == 15
    assert await _held(raw, first, account, key) == (500, 200)  # the refused ones hold no tokens
    assert first.link.tokens_held[key] + second.link.tokens_held[key] == 200


async def test_a_call_settle_cut_off_with_its_connection_is_counted_once_redis_answers(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    link = state.link
    account, key = await _account_and_key(store, 1000)
    hold, reservation = await state.holds.take(key, 1000, 700, account, 600, "Add credits.")
    epoch = link.epoch
    # Redis closes every connection: the settle's reply never comes (it may or may not have run).
    await raw.client_kill_filter(_type="normal", skipme=True)
    charged = await state.holds.settle(hold, 700, reservation, 450)
    assert charged == 450  # within the reservation, without Redis's word
    await until(lambda: link.ready and link.in_step, 10)
    assert link.epoch == epoch  # the same epoch: no rebuild reads the day's use again
    assert await used_today(raw, state, key) == 700  # counted once
    # What this process holds was registered again: the charge, no reservation, no tokens.
    assert await _held(raw, state, account, key) == (450, 0)
    assert await _refusal(state, account, key, 1000, 1, 551) is Reason.INSUFFICIENT_CREDITS  # 1000 - 450
    assert await _refusal(state, account, key, 1000, 300, 550) is None
    assert await _refusal(state, account, key, 1000, 1, 1) is Reason.BUDGET_EXCEEDED  # 700 used + 300 held


async def test_a_call_whose_admission_timed_out_holds_nothing_once_redis_answers(
    processes: Processes, store: Store, raw: aioredis.Redis
) -> None:
    (state,) = await processes(1)
    link = state.link
    account, key = await _account_and_key(store, 1000)
    await state.holds.take(key, 5000, 10, account, 1, "Add credits.")
    await warm(state)
    epoch = link.epoch
    # Redis answers only after the call gave up on it (it may have run the admission, or may not).
    await raw.client_pause(600, all=True)
    assert await _refusal(state, account, key, 5000, 600, 400) is Reason.SHARED_STATE_UNAVAILABLE
    await until(lambda: link.ready and link.in_step, 10)
    assert link.epoch == epoch
    # Whatever the refused call may have taken is undone (a registration sets absolute amounts).
    assert await _held(raw, state, account, key) == (1, 10)
    assert (state.link.credits_held[account], state.link.tokens_held[key]) == (1, 10)
