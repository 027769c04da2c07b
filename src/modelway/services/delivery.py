"""Unary answers and the caller's deadline: never charge an answer the caller did not receive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modelway.core.pipeline import ChatRun, Completion, Deliverable
from modelway.errors import GatewayError, Reason
from modelway.services._rpc import RpcCall

Parsed = TypeVar("Parsed")
Answer = TypeVar("Answer")

__all__ = ["answer_in_time", "complete_in_time", "deadline_error", "deliver", "in_time"]

# An answer with less time than this left before the caller's deadline is not sent: its usage
# row must be committed first (a group commit waits a few ms for company), and sending it and
# the caller reading it take a moment more, longer on a loaded machine. Checked before the row
# is committed, and again after (the answer is then withdrawn: see deliver).
_DELIVERY_MARGIN = 0.050


def deadline_error() -> GatewayError:
    return GatewayError(Reason.DEADLINE_EXCEEDED, "The call's deadline passed before its answer was ready.")


def in_time(call: RpcCall, parse: Callable[[], Parsed]) -> Callable[[], Parsed]:
    """`parse`, refused when the caller's deadline has passed already (inside the pipeline: a 504 row, no charge)."""

    def checked() -> Parsed:
        remaining = call.time_remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_error()
        return parse()

    return checked


async def answer_in_time(call: RpcCall, run: Deliverable, answer: Awaitable[Answer]) -> Answer:
    """`answer` (the run's whole answer being made), bounded by the caller's deadline; one ready too
    late is recorded as not delivered."""
    remaining = call.time_remaining()
    if remaining is None:
        return await answer
    try:
        async with asyncio.timeout(remaining - _DELIVERY_MARGIN):
            made = await answer
    except TimeoutError:
        raise deadline_error() from None
    left = call.time_remaining()
    if left is not None and left < _DELIVERY_MARGIN:
        error = deadline_error()
        run.undelivered(error)
        raise error
    return made


async def complete_in_time(call: RpcCall, run: ChatRun) -> Completion:
    """A chat call's whole answer, bounded by the caller's deadline (see `answer_in_time`)."""
    return await answer_in_time(call, run, run.complete())


async def deliver(call: RpcCall, run: Deliverable) -> None:
    """Commits the usage row before the answer goes out (so it survives a crash once sent); an answer
    whose caller's deadline passed meanwhile never reaches it, so its row is withdrawn and refunded."""
    try:
        await run.finish()
    except asyncio.CancelledError:
        await run.withdraw(deadline_error())
        raise
    left = call.time_remaining()
    if left is not None and left < _DELIVERY_MARGIN:
        error = deadline_error()
        await run.withdraw(error)
        raise error
