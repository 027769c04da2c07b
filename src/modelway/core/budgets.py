"""Daily token budgets per key, reset at UTC midnight."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from modelway.core.clock import Clock
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init

__all__ = ["DAY_SECONDS", "TokenBudgets", "TokenHold", "day_start", "over_budget"]

DAY_SECONDS = 86_400


def day_start(now: float) -> int:
    """The UTC midnight that began the day `now` falls in."""
    return int(now // DAY_SECONDS) * DAY_SECONDS


def over_budget(budget: int, used: int, held: int, now: float) -> GatewayError:
    """The 429 for a key whose day is spoken for (`used` today, `held` by calls under way)."""
    reset_in = day_start(now) + DAY_SECONDS - int(now)
    return GatewayError(
        Reason.BUDGET_EXCEEDED,
        f"This key has used its daily budget of {budget} tokens ({used} used today"
        f"{', more in calls under way' if held else ''}). "
        f"The budget resets at 00:00 UTC, in {reset_in}s.",
        retry_after=max(1, reset_in),
    )


@slot_init
@dataclass(frozen=True, slots=True)
class TokenHold:
    key_id: str
    tokens: int  # the call's worst case, held while it runs


class TokenBudgets:
    """Tokens each key used today, plus what its calls in flight may still use.

    A call is admitted while used + held is under the budget, and then holds
    its worst case until it settles to what it really used. So however many
    calls race, the day's total can pass the budget by at most one call's
    worst case, and never by the sum of many. Loaded from the store at start.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._day = day_start(clock.now())
        self._used: Counter[str] = Counter()
        self._held: Counter[str] = Counter()

    def _roll(self) -> None:
        today = day_start(self._clock.now())
        if today != self._day:
            self._day, self._used = today, Counter()

    def load(self, day: int, used: dict[str, int]) -> None:
        if day == day_start(self._clock.now()):
            self._day, self._used = day, Counter(used)

    async def hold(self, key_id: str, budget: int, worst_case: int) -> TokenHold:
        self._roll()
        if self._used[key_id] + self._held[key_id] >= budget:
            raise over_budget(budget, self._used[key_id], self._held[key_id], self._clock.now())
        self._held[key_id] += worst_case
        return TokenHold(key_id, worst_case)

    async def settle(self, hold: TokenHold, used: int) -> None:
        self._roll()
        self._held[hold.key_id] -= hold.tokens
        self._used[hold.key_id] += used

    def used(self, key_id: str) -> int:
        self._roll()
        return self._used[key_id]
