"""Per-minute request limits: fixed UTC windows, exact under concurrency within a process."""

from __future__ import annotations

from dataclasses import dataclass

from modelway.core.clock import Clock
from modelway.errors import GatewayError, Reason

__all__ = ["LimitRule", "LimitState", "RateLimiter"]

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class LimitRule:
    scope: str  # what is counted, e.g. "key:key_123:chat" or "global"
    limit: int
    refusal: str  # the message when this rule refuses
    reason: Reason = Reason.RATE_LIMITED


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
        window = int(now // WINDOW_SECONDS)
        if window != self._window:
            # A new minute: every count starts again, and old ones can go.
            self._window, self._counts = window, {}
        reset_at = (window + 1) * WINDOW_SECONDS
        for rule in rules:
            used = self._counts.get(rule.scope, 0)
            if used >= rule.limit:
                state = LimitState(rule.limit, 0, reset_at)
                retry_after = max(1, -int(-(reset_at - now) // 1))
                raise GatewayError(
                    rule.reason,
                    f"{rule.refusal}: limit {rule.limit} requests per minute. Please try again in {retry_after}s.",
                    retry_after=retry_after,
                    headers=state.headers(),
                )
        states = []
        for rule in rules:
            used = self._counts.get(rule.scope, 0) + 1
            self._counts[rule.scope] = used
            states.append(LimitState(rule.limit, rule.limit - used, reset_at))
        return tuple(states)
