"""Helpers for tests of the shared state at the level of its parts: n links to one real Redis, as n
server processes would have, over one store."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

from modelway.core.limits import LimitRule
from modelway.errors import GatewayError, Reason
from modelway.shared import SharedState
from modelway.store import AccountRecord, Store

__all__ = ["QUIET", "Processes", "StoppedClock", "new_account", "nothing", "refused", "until", "warm"]

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
