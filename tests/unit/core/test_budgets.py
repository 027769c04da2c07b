from __future__ import annotations

import calendar

import pytest

from modelway.core.budgets import TokenBudgets, day_start
from modelway.errors import GatewayError, Reason
from tests.unit.core.test_limits import FixedClock

MIDNIGHT = calendar.timegm((2030, 1, 2, 0, 0, 0))


async def test_refuses_once_spent_and_resets_at_utc_midnight() -> None:
    clock = FixedClock(MIDNIGHT - 100)
    budgets = TokenBudgets(clock)
    await budgets.settle(await budgets.hold("k", 50, 80), 50)
    with pytest.raises(GatewayError) as caught:
        await budgets.hold("k", 50, 1)
    assert caught.value.retry_after == 100
    assert caught.value.reason is Reason.BUDGET_EXCEEDED
    assert caught.value.http_status == 429
    assert caught.value.retryable is False
    await budgets.hold("other", 50, 1)  # per key
    clock.at = MIDNIGHT
    await budgets.hold("k", 50, 1)
    assert budgets.used("k") == 0


async def test_calls_in_flight_count_so_a_race_overshoots_by_one_call_at_most() -> None:
    budgets = TokenBudgets(FixedClock(MIDNIGHT + 10))
    holds = [await budgets.hold("k", 100, 60), await budgets.hold("k", 100, 60)]  # 0, then 60 < 100: both admitted
    with pytest.raises(GatewayError) as caught:
        await budgets.hold("k", 100, 60)  # 120 spoken for
    assert caught.value.reason is Reason.BUDGET_EXCEEDED
    await budgets.settle(holds[0], 10)
    await budgets.settle(holds[1], 10)
    assert budgets.used("k") == 20
    await budgets.hold("k", 100, 60)  # what was not used is free again


def test_load_restores_only_todays_spending() -> None:
    clock = FixedClock(MIDNIGHT + 10)
    budgets = TokenBudgets(clock)
    budgets.load(day_start(MIDNIGHT - 5), {"k": 999})  # yesterday's: ignored
    assert budgets.used("k") == 0
    budgets.load(MIDNIGHT, {"k": 40})
    assert budgets.used("k") == 40
