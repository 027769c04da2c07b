"""Awaiting store writes that must be accounted for exactly once, cancellation or not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["await_write"]

T = TypeVar("T")


async def await_write(write: Awaitable[T], on_done: Callable[[BaseException | None], None]) -> T:
    """Awaits a write and calls `on_done(error or None)` exactly once, when it has really ended.

    A write runs on the store thread and cannot be stopped half-way: if the
    awaiting task is cancelled, the write still commits. Treating it as not
    done (and so doing it again, or rolling memory back) would count it
    twice or make memory disagree with the store. So the write is shielded,
    its outcome is reported from the write itself, and a cancellation of the
    caller is passed on only once the write has ended.
    """
    task = asyncio.ensure_future(write)
    # Registered before shield() registers its own callback, so it runs first:
    # the caller resumes with the outcome already accounted for.
    # A write cancelled before it ran (the loop ending) committed nothing: that is a failure.
    task.add_done_callback(lambda done: on_done(asyncio.CancelledError() if done.cancelled() else done.exception()))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task})
        raise
