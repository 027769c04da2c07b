"""Daily token budgets per key, reset at UTC midnight."""

from __future__ import annotations

from modelway.core.clock import Clock
from modelway.errors import BudgetExceeded

__all__ = ["TokenBudgets", "day_start"]

DAY_SECONDS = 86_400


def day_start(now: float) -> int:
    """The UTC midnight that began the day `now` falls in."""
    return int(now // DAY_SECONDS) * DAY_SECONDS


class TokenBudgets:
    """Tokens each key used today, in memory; loaded from the store at start.

    A call is admitted while the key is under its budget and then charged
    what it really used, so the last admitted call may overshoot a little
    (a worst-case reservation would refuse calls that would have fit).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._day = day_start(clock.now())
        self._used: dict[str, int] = {}

    def _roll(self) -> None:
        today = day_start(self._clock.now())
        if today != self._day:
            self._day, self._used = today, {}

    def load(self, day: int, used: dict[str, int]) -> None:
        if day == day_start(self._clock.now()):
            self._day, self._used = day, dict(used)

    def check(self, key_id: str, budget: int) -> None:
        self._roll()
        used = self._used.get(key_id, 0)
        if used >= budget:
            reset_in = self._day + DAY_SECONDS - int(self._clock.now())
            raise BudgetExceeded(
                f"This key has used its daily budget of {budget} tokens ({used} used today). "
                f"The budget resets at 00:00 UTC, in {reset_in}s.",
                retry_after=max(1, reset_in),
            )

    def add(self, key_id: str, tokens: int) -> None:
        self._roll()
        if tokens:
            self._used[key_id] = self._used.get(key_id, 0) + tokens

    def used(self, key_id: str) -> int:
        self._roll()
        return self._used.get(key_id, 0)
