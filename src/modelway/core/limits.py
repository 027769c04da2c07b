"""Per-minute request limits: fixed UTC windows, exact under concurrency within a process."""

from __future__ import annotations

from dataclasses import dataclass

from modelway.core.clock import Clock
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init

__all__ = ["WINDOW_SECONDS", "LimitRule", "LimitState", "RateLimiter", "refusal", "window_of"]

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class LimitRule:
    scope: str  # what is counted, e.g. "key:key_123:chat" or "global"
    limit: int
    refusal: str  # the message when this rule refuses
    reason: Reason = Reason.RATE_LIMITED


@slot_init
@dataclass(frozen=True, slots=True)
class LimitState:
    limit: int
    remaining: int
    reset_at: int  # UTC epoch seconds when the window ends

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("x-ratelimit-limit-requests", str(self.limit)),
            ("x-ratelimit-remaining-requests", str(self.remaining)),
            ("x-ratelimit-reset-requests", str(self.reset_at)),
        )


def window_of(now: float) -> tuple[int, int]:
    """The fixed one-minute window `now` falls in, and when it ends (UTC epoch seconds)."""
    window = int(now // WINDOW_SECONDS)
    return window, (window + 1) * WINDOW_SECONDS


def refusal(rule: LimitRule, now: float) -> GatewayError:
    """The 429 for a rule whose window is used up: Retry-After is the rest of the window, rounded up."""
    reset_at = window_of(now)[1]
    state = LimitState(rule.limit, 0, reset_at)
    retry_after = max(1, -int(-(reset_at - now) // 1))
    return GatewayError(
        rule.reason,
        f"{rule.refusal}: limit {rule.limit} requests per minute. Please try again in {retry_after}s.",
        retry_after=retry_after,
        headers=state.headers(),
    )


class RateLimiter:
    """Counts requests per scope in fixed one-minute windows aligned to UTC.

    `acquire` checks every rule before counting any, and never awaits, so on
    one event loop a burst of N concurrent calls against a limit of L admits
    exactly L, and a call refused by one rule uses up no other rule's quota.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    async def acquire(self, *rules: LimitRule) -> tuple[LimitState, ...]:
        now = self._clock.now()
        window, reset_at = window_of(now)
        if window != self._window:
            # A new minute: every count starts again, and old ones can go.
            self._window, self._counts = window, {}
        for rule in rules:
            if self._counts.get(rule.scope, 0) >= rule.limit:
                raise refusal(rule, now)
        states = []
        for rule in rules:
            used = self._counts.get(rule.scope, 0) + 1
            self._counts[rule.scope] = used
            states.append(LimitState(rule.limit, rule.limit - used, reset_at))
        return tuple(states)
