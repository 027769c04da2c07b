"""Circuit breakers, one per upstream provider: skip a provider that keeps failing, then probe it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelway.core.clock import Clock

__all__ = ["Breaker", "Breakers"]


@dataclass(slots=True)
class Breaker:
    """Closed: calls pass. Open (after `threshold` consecutive failures): calls are skipped
    for `cooldown` seconds. Half-open: then exactly one probe passes; its success closes the
    breaker, its failure opens it again.

    Also keeps a moving average of the time to first byte, for `sort: latency`.
    """

    threshold: int
    cooldown: float
    clock: Clock
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    latency: float = 0.0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock.monotonic() >= self.opened_at + self.cooldown else "open"

    def allow(self) -> bool:
        """Whether a call may go to this provider now (taking the half-open probe if so)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock.monotonic())

    def succeeded(self, first_byte_seconds: float) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False
        self.latency = first_byte_seconds if not self.latency else 0.8 * self.latency + 0.2 * first_byte_seconds

    def failed(self, probe: bool = False) -> None:
        """An attempt failed; `probe` says whether it was the half-open probe."""
        self.failures += 1
        if probe or self.failures >= self.threshold:
            self.opened_at = self.clock.monotonic()
        if probe:
            self.probing = False

    def released(self, probe: bool = False) -> None:
        """An attempt that ended for the caller's reasons (cancelled, its own bad request) proves nothing."""
        if probe:
            self.probing = False


class Breakers:
    def __init__(self, providers: Iterable[str], *, threshold: int, cooldown: float, clock: Clock) -> None:
        self._breakers = {name: Breaker(threshold, cooldown, clock) for name in providers}

    def __getitem__(self, provider: str) -> Breaker:
        return self._breakers[provider]

    def states(self) -> dict[str, str]:
        return {name: breaker.state for name, breaker in self._breakers.items()}
