"""Pull: an async generator's next item taken at once when ready, awaited when not, and abandoned cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from modelway.core.ready import Pull


async def _groups(source: AsyncGenerator[int, None]) -> list[list[int]]:
    """Groups the source's items by readiness, as ChatRun.event_groups does."""
    groups: list[list[int]] = []
    group: list[int] = []
    while True:
        pull = Pull(source)
        if pull.exhausted:
            break
        if pull.ready:
            assert pull.value is not None
            group.append(pull.value)
            continue
        if group:
            groups.append(group)
            group = []
        try:
            group.append(await pull)
        except StopAsyncIteration:
            break
    if group:
        groups.append(group)
    return groups


async def test_items_that_need_no_wait_are_grouped_and_a_wait_ends_a_group() -> None:
    async def source() -> AsyncGenerator[int, None]:
        yield 1
        yield 2
        await asyncio.sleep(0.01)  # a read that waits
        yield 3
        await asyncio.sleep(0)  # a bare yield to the loop is a wait too
        yield 4
        yield 5

    assert await _groups(source()) == [[1, 2], [3], [4, 5]]


async def test_an_error_raised_without_waiting_or_after_a_wait_comes_out_of_the_pull() -> None:
    async def at_once() -> AsyncGenerator[int, None]:
        yield 1
        raise ValueError("bad event")

    source = at_once()
    assert Pull(source).value == 1
    try:
        Pull(source)
    except ValueError as exc:
        assert str(exc) == "bad event"
    else:
        raise AssertionError("the error did not come out")

    async def later() -> AsyncGenerator[int, None]:
        await asyncio.sleep(0.01)
        raise ValueError("cut")
        yield 0  # pragma: no cover

    pull = Pull(later())
    assert not pull.ready
    try:
        await pull
    except ValueError as exc:
        assert str(exc) == "cut"
    else:
        raise AssertionError("the error did not come out")


async def test_an_abandoned_pull_cancels_the_source_where_it_waits_and_runs_its_cleanup() -> None:
    cleaned: list[str] = []

    async def source() -> AsyncGenerator[int, None]:
        try:
            await asyncio.sleep(10)
            yield 1
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits runs to its end
            cleaned.append("closed")

    generator = source()
    pull = Pull(generator)
    assert not pull.ready
    await pull.abandon()
    assert cleaned == ["cancelled", "closed"]
    await generator.aclose()  # ended, not left "running"
    assert Pull(generator).exhausted


async def test_a_cancelled_task_awaiting_a_pull_cancels_the_source() -> None:
    seen: list[str] = []

    async def source() -> AsyncGenerator[int, None]:
        try:
            await asyncio.sleep(10)
            yield 1
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def reader() -> int:
        return await Pull(source())

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
