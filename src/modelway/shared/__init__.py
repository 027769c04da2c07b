"""State shared by every server process (Redis): limits, budgets, credits, key changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelway.config import SharedConfig
from modelway.core.clock import Clock
from modelway.shared.keys import KeyChanges
from modelway.shared.link import BalanceSource, SharedLink
from modelway.shared.state import SharedBudgets, SharedCallHolds, SharedLedger, SharedRateLimits

__all__ = ["SharedState", "open_shared_state"]

log = logging.getLogger(__name__)

_CLOSE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class SharedState:
    """The Redis-backed parts one server process uses in place of its in-memory ones."""

    link: SharedLink
    ledger: SharedLedger
    budgets: SharedBudgets
    holds: SharedCallHolds
    limits: SharedRateLimits
    key_changes: KeyChanges

    async def start(self) -> None:
        await self.link.start()
        self.key_changes.start()

    async def close(self) -> None:
        # Bounded: a Redis that stopped answering must not hold up the server's shutdown.
        for name, step in (("key change listener", self.key_changes.close), ("Redis connection", self.link.close)):
            try:
                async with asyncio.timeout(_CLOSE_SECONDS):
                    await step()
            except TimeoutError:
                log.warning("closing the %s took over %.0fs; left behind", name, _CLOSE_SECONDS)


def open_shared_state(
    config: SharedConfig, store: BalanceSource, clock: Clock, reload_keys: Callable[[], Awaitable[None]]
) -> SharedState:
    """The shared parts for `config.redis_url` (nothing connects before `start`)."""
    link = SharedLink(config, store, clock)
    ledger, budgets = SharedLedger(link), SharedBudgets(link, clock)
    return SharedState(
        link=link,
        ledger=ledger,
        budgets=budgets,
        holds=SharedCallHolds(link, clock, budgets, ledger),
        limits=SharedRateLimits(link, clock),
        key_changes=KeyChanges(link.redis, link.proc, reload_keys),
    )
