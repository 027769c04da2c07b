"""Tests for the circuit breakers: closed, open after N failures, one half-open probe, closed or open again."""

from __future__ import annotations

import pytest

from modelway.core.breaker import Breaker, Breakers


class SettableClock:
    """Wall and monotonic time, both set by the test."""

    def __init__(self, at: float = 1000.0) -> None:
        self.at = at

    def now(self) -> float:
        return 1_800_000_000 + self.at

    def monotonic(self) -> float:
        return self.at


def breaker(threshold: int = 3, cooldown: float = 30.0) -> tuple[Breaker, SettableClock]:
    clock = SettableClock()
    return Breaker(threshold, cooldown, clock), clock


def opened(threshold: int = 3, cooldown: float = 30.0) -> tuple[Breaker, SettableClock]:
    b, clock = breaker(threshold, cooldown)
    for _ in range(threshold):
        assert b.allow()
        b.failed()
    assert b.state == "open"
    return b, clock


def test_a_new_breaker_is_closed_and_lets_everything_through() -> None:
    b, _ = breaker()
    assert b.state == "closed"
    assert [b.allow() for _ in range(5)] == [True] * 5
    assert b.retry_in() == 0.0


def test_opens_after_threshold_consecutive_failures() -> None:
    b, clock = breaker(threshold=3)
    b.failed()
    b.failed()
    assert (b.state, b.failures, b.opened_at) == ("closed", 2, None)
    assert b.allow()
    clock.at += 1
    b.failed()
    assert (b.state, b.failures, b.opened_at) == ("open", 3, 1001.0)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    b, _ = breaker(threshold=3)
    b.failed()
    b.failed()
    b.succeeded(0.5)
    assert b.failures == 0
    b.failed()
    b.failed()
    assert b.state == "closed"
    b.failed()
    assert b.state == "open"


def test_skipped_while_open() -> None:
    b, clock = opened(cooldown=30)
    assert [b.allow() for _ in range(3)] == [False, False, False]
    clock.at += 29.999
    assert b.state == "open"
    assert not b.allow()


def test_exactly_one_half_open_probe_after_the_cooldown() -> None:
    b, clock = opened(cooldown=30)
    clock.at += 30
    assert b.state == "half_open"
    assert b.allow() is True  # the probe
    assert b.probing is True
    assert [b.allow() for _ in range(3)] == [False, False, False]
    clock.at += 100  # however long the probe takes, it stays the only one
    assert b.state == "half_open"
    assert not b.allow()


def test_probe_success_closes() -> None:
    b, clock = opened(cooldown=30)
    clock.at += 30
    assert b.allow()
    b.succeeded(0.2)
    assert (b.state, b.failures, b.opened_at, b.probing) == ("closed", 0, None, False)
    assert [b.allow() for _ in range(3)] == [True, True, True]


def test_probe_failure_reopens_for_a_full_cooldown() -> None:
    b, clock = opened(threshold=3, cooldown=30)
    clock.at += 45
    assert b.allow()
    b.failed(probe=True)
    assert (b.state, b.opened_at, b.probing) == ("open", 1045.0, False)
    assert not b.allow()
    assert b.retry_in() == 30.0
    clock.at += 30
    assert b.state == "half_open"
    assert b.allow()


def test_a_probe_failure_reopens_even_below_the_threshold() -> None:
    clock = SettableClock()
    # Opened, with no failures on record (as a breaker restored from a snapshot would be).
    b = Breaker(3, 10.0, clock, failures=0, opened_at=clock.monotonic() - 10)
    assert b.state == "half_open"
    assert b.allow()
    b.failed(probe=True)  # one failure of three, but it was the probe
    assert (b.state, b.failures, b.opened_at) == ("open", 1, 1000.0)


def test_released_frees_the_probe() -> None:
    b, clock = opened(cooldown=30)
    clock.at += 30
    assert b.allow()
    assert not b.allow()
    b.released(probe=True)  # the probe ended for the caller's reasons: it proved nothing
    assert (b.state, b.probing) == ("half_open", False)
    assert b.allow() is True  # another probe may go
    assert not b.allow()


def test_released_on_a_closed_breaker_changes_nothing() -> None:
    b, _ = breaker(threshold=2)
    b.failed()
    b.released()
    assert (b.state, b.failures) == ("closed", 1)


def test_retry_in() -> None:
    b, clock = breaker(threshold=1, cooldown=30)
    assert b.retry_in() == 0.0
    b.failed()
    assert b.retry_in() == 30.0
    clock.at += 12.5
    assert b.retry_in() == 17.5
    clock.at += 17.5
    assert b.retry_in() == 0.0
    clock.at += 100
    assert b.retry_in() == 0.0  # never negative


def test_the_state_follows_the_monotonic_clock_not_the_wall_clock() -> None:
    clock = SettableClock()
    b = Breaker(1, 30.0, clock)
    b.failed()
    assert b.opened_at == clock.monotonic()


def test_latency_is_a_moving_average_of_first_byte_times() -> None:
    b, _ = breaker()
    assert b.latency == 0.0
    b.succeeded(1.0)
    assert b.latency == 1.0  # the first sample as it is
    b.succeeded(2.0)
    assert b.latency == pytest.approx(1.2)
    b.succeeded(0.0)
    assert b.latency == pytest.approx(0.96)


def test_breakers_one_per_provider() -> None:
    clock = SettableClock()
    breakers = Breakers(["a", "b"], threshold=1, cooldown=5.0, clock=clock)
    assert breakers.states() == {"a": "closed", "b": "closed"}
    assert (breakers["a"].threshold, breakers["a"].cooldown) == (1, 5.0)
    breakers["a"].failed()
    assert breakers.states() == {"a": "open", "b": "closed"}
    clock.at += 5
    assert breakers.states() == {"a": "half_open", "b": "closed"}
    assert breakers["a"] is breakers["a"]
    with pytest.raises(KeyError):
        breakers["c"]
