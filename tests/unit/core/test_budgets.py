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
    budgets.check("k", 50)
    budgets.add("k", 50)
    with pytest.raises(BudgetExceeded) as caught:
        budgets.check("k", 50)
    assert caught.value.retry_after == 100
    assert caught.value.should_retry is False
    budgets.check("other", 50)  # per key
    clock.at = MIDNIGHT
    budgets.check("k", 50)
    assert budgets.used("k") == 0


def test_load_restores_only_todays_spending() -> None:
    clock = FixedClock(MIDNIGHT + 10)
    budgets = TokenBudgets(clock)
    budgets.load(day_start(MIDNIGHT - 5), {"k": 999})  # yesterday's: ignored
    assert budgets.used("k") == 0
    budgets.load(MIDNIGHT, {"k": 40})
    assert budgets.used("k") == 40
