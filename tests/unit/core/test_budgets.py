from __future__ import annotations

import calendar

import pytest

from modelway.core.budgets import TokenBudgets, day_start
from modelway.errors import BudgetExceeded
from tests.unit.core.test_limits import FixedClock

MIDNIGHT = calendar.timegm((2030, 1, 2, 0, 0, 0))


def test_refuses_once_spent_and_resets_at_utc_midnight() -> None:
    clock = FixedClock(MIDNIGHT - 100)
    budgets = TokenBudgets(clock)
    budgets.settle(budgets.hold("k", 50, 80), 50)
    with pytest.raises(BudgetExceeded) as caught:
        budgets.hold("k", 50, 1)
    assert caught.value.retry_after == 100
    assert caught.value.should_retry is False
    budgets.hold("other", 50, 1)  # per key
    clock.at = MIDNIGHT
    budgets.hold("k", 50, 1)
    assert budgets.used("k") == 0


def test_calls_in_flight_count_so_a_race_overshoots_by_one_call_at_most() -> None:
    budgets = TokenBudgets(FixedClock(MIDNIGHT + 10))
    holds = [budgets.hold("k", 100, 60), budgets.hold("k", 100, 60)]  # 0, then 60 < 100: both admitted
    with pytest.raises(BudgetExceeded):
        budgets.hold("k", 100, 60)  # 120 spoken for
    budgets.settle(holds[0], 10)
    budgets.settle(holds[1], 10)
    assert budgets.used("k") == 20
    budgets.hold("k", 100, 60)  # what was not used is free again


def test_load_restores_only_todays_spending() -> None:
    clock = FixedClock(MIDNIGHT + 10)
    budgets = TokenBudgets(clock)
    budgets.load(day_start(MIDNIGHT - 5), {"k": 999})  # yesterday's: ignored
    assert budgets.used("k") == 0
    budgets.load(MIDNIGHT, {"k": 40})
    assert budgets.used("k") == 40
