"""Helpers for tests of the shared state at the level of its parts: n links to one real Redis, as n
server processes would have, over one store."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from modelway.core.limits import LimitRule
from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState
from modelway.store import AccountRecord, Store

__all__ = ["QUIET", "Processes", "StoppedClock", "new_account", "nothing", "refused", "until", "used_today", "warm"]

QUIET = 0.3

Processes = Callable[[int], Awaitable[list[SharedState]]]


class StoppedClock:
    """Wall time fixed at a chosen moment (monotonic time runs on)."""

    def __init__(self, moment: float) -> None:
        self.moment = moment

    def now(self) -> float:
        return self.moment

    def monotonic(self) -> float:
        return time.monotonic()


async def nothing() -> None:
    return None


async def until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def new_account(store: Store, credits: int) -> str:
    account = "acct_" + secrets.token_hex(6)
    await store.insert_account(AccountRecord(account, "a", "free", 0), credits=credits)
    return account


async def warm(state: SharedState) -> None:
    """Connections to Redis open before it gets busy (a new one would wait for its handshake and
    fail before sending anything): the calls under test reach Redis and wait there."""
    rule = LimitRule("warm:" + secrets.token_hex(4), 1_000_000, "warm")
    await asyncio.gather(*(state.limits.acquire(rule) for _ in range(8)))


async def refused(state: SharedState, account: str, amount: int) -> bool:
    """Whether reserving `amount` is refused for want of credits (admitted otherwise)."""
    try:
        await state.ledger.reserve(account, amount, "Add credits.")
    except GatewayError as exc:
        assert exc.reason is Reason.INSUFFICIENT_CREDITS, exc
        return True
    return False


async def used_today(raw: aioredis.Redis, state: SharedState, key: str) -> int:
    """Tokens the key used, by Redis's count in the process's epoch (one day: the tests' clock stands still)."""
    found = [name async for name in raw.scan_iter(match=f"mw:{state.link.epoch}:u:*:{key}")]
    return sum([int(await raw.get(name) or 0) for name in found])
