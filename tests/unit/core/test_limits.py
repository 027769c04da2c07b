from __future__ import annotations

import pytest

from modelway.core.limits import LimitRule, RateLimiter
from modelway.errors import GatewayError, Reason


class FixedClock:
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at


async def test_counts_until_the_limit_then_refuses_with_retry_after() -> None:
    clock = FixedClock(1_800_000_010.5)  # 10.5 s into a minute
    limiter = RateLimiter(clock)
    rule = LimitRule("key:a", 3, "Rate limit reached for this key")
    states = [(await limiter.acquire(rule))[0] for _ in range(3)]
    assert [s.remaining for s in states] == [2, 1, 0]
    assert {s.reset_at for s in states} == {1_800_000_060}
    with pytest.raises(GatewayError) as caught:
        await limiter.acquire(rule)
    assert caught.value.reason is Reason.RATE_LIMITED
    assert caught.value.http_status == 429
    assert caught.value.retry_after == 50  # 49.5 s, rounded up
    assert ("x-ratelimit-remaining-requests", "0") in caught.value.headers


async def test_a_refusal_by_one_rule_spends_no_other_rules_quota() -> None:
    limiter = RateLimiter(FixedClock(1_800_000_000))
    key = LimitRule("key:a", 5, "key")
    glob = LimitRule("global", 1, "global", reason=Reason.GLOBAL_RATE_LIMITED)
    await limiter.acquire(key, glob)
    with pytest.raises(GatewayError) as caught:
        await limiter.acquire(key, glob)
    assert caught.value.reason is Reason.GLOBAL_RATE_LIMITED
    assert (await limiter.acquire(key))[0].remaining == 3  # only the admitted call was counted


async def test_a_new_minute_starts_from_zero() -> None:
    clock = FixedClock(1_800_000_059)
    limiter = RateLimiter(clock)
    rule = LimitRule("key:a", 1, "key")
    await limiter.acquire(rule)
    clock.at += 1
    assert (await limiter.acquire(rule))[0].remaining == 0
