"""Turns: one exchange at a time per conversation, and nothing kept for a conversation nobody is using."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from modelway.services.conversations import Turns

KEY = ("acct", 7)


async def test_a_waiter_runs_after_the_holder_and_the_map_empties() -> None:
    turns = Turns()
    order: list[str] = []
    released = asyncio.Event()

    async def holder() -> None:
        async with turns.hold(KEY):
            order.append("holder in")
            await released.wait()
            order.append("holder out")

    async def waiter() -> None:
        async with turns.hold(KEY):
            order.append("waiter in")

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    assert order == ["holder in"] and len(turns) == 1
    async with turns.hold(("acct", 8)):  # another conversation does not wait
        assert len(turns) == 2
    released.set()
    await asyncio.gather(first, second)
    assert order == ["holder in", "holder out", "waiter in"]
    assert len(turns) == 0


@pytest.mark.parametrize("cancelled", ["holder", "waiter"])
async def test_a_cancelled_holder_or_waiter_leaves_nothing_behind(cancelled: str) -> None:
    turns = Turns()
    entered: list[str] = []
    forever = asyncio.Event()

    async def take(name: str) -> None:
        async with turns.hold(KEY):
            entered.append(name)
            if name == "holder":
                await forever.wait() if cancelled == "holder" else await asyncio.sleep(0.02)

    holder = asyncio.create_task(take("holder"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(take("waiter"))
    await asyncio.sleep(0.005)
    assert entered == ["holder"] and len(turns) == 1
    (holder if cancelled == "holder" else waiter).cancel()
    for task in (holder, waiter):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # A cancelled holder lets the waiter in; a cancelled waiter never enters.
    assert entered == (["holder", "waiter"] if cancelled == "holder" else ["holder"])
    assert len(turns) == 0
    async with turns.hold(KEY):  # and the key can be taken again at once
        assert len(turns) == 1
    assert len(turns) == 0
