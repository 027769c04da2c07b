"""The one rule for work on large bodies: above OFFLOAD_BYTES it runs in a worker thread, not on the event loop.

Decoding and validating a body of megabytes takes tens of milliseconds, long
enough to stall every other call on the loop; in a thread the loop keeps its
turns (the GIL is handed over every 5 ms). Small bodies stay on the loop,
where a thread hop would cost more than the work. A leaf module: core,
services and providers all import it, and it imports nothing of theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["OFFLOAD_BYTES", "off_loop_if_large"]

# Requests and whole answers larger than this are parsed in a worker thread.
OFFLOAD_BYTES = 256 * 1024

T = TypeVar("T")


async def off_loop_if_large(size: int, work: Callable[[], T]) -> T:
    """`work()`, in a worker thread when the body it reads is `size` bytes, more than OFFLOAD_BYTES."""
    return await asyncio.to_thread(work) if size > OFFLOAD_BYTES else work()
