"""A whole answer and its caller's deadline (services/delivery.py): never charged when it was not received.

The end-to-end deadline tests reach these rules only when a deadline happens to fall in the right
millisecond; here the caller's time left is scripted, so each rule is met every time.
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from modelway.errors import GatewayError, Reason
from modelway.services._rpc import RpcCall
from modelway.services.delivery import answer_in_time, deliver


class Caller:
    """What delivery reads of a call: the seconds left before its deadline (None: no deadline)."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


class Answer:
    """A run whose settling takes `commit` seconds, during which its caller loses `spent` seconds."""

    def __init__(self, caller: Caller, *, commit: float = 0.0, spent: float = 0.0) -> None:
        self.caller, self.commit, self.spent = caller, commit, spent
        self.finished = False
        self.withdrawn: list[GatewayError] = []
        self.not_delivered: list[GatewayError] = []

    async def finish(self) -> None:
        await asyncio.sleep(self.commit)
        if self.caller.remaining is not None:
            self.caller.remaining -= self.spent
        self.finished = True

    async def withdraw(self, error: GatewayError) -> None:
        self.withdrawn.append(error)

    def undelivered(self, error: GatewayError) -> None:
        self.not_delivered.append(error)


def call(caller: Caller) -> RpcCall:
    return cast(RpcCall, caller)


@pytest.mark.parametrize("remaining", [None, 5.0])
async def test_an_answer_with_time_to_spare_is_delivered(remaining: float | None) -> None:
    caller = Caller(remaining)
    run = Answer(caller, spent=0.5)
    await deliver(call(caller), run)
    assert run.finished and not run.withdrawn


async def test_an_answer_whose_deadline_nears_while_its_row_commits_is_withdrawn() -> None:
    caller = Caller(0.2)
    run = Answer(caller, spent=0.19)  # 10 ms left after the commit: less than the margin
    with pytest.raises(GatewayError) as caught:
        await deliver(call(caller), run)
    assert caught.value.reason is Reason.DEADLINE_EXCEEDED
    assert run.finished and [error.reason for error in run.withdrawn] == [Reason.DEADLINE_EXCEEDED]


async def test_an_answer_whose_caller_is_cancelled_while_its_row_commits_is_withdrawn() -> None:
    caller = Caller(None)
    run = Answer(caller, commit=10)
    delivering = asyncio.ensure_future(deliver(call(caller), run))
    await asyncio.sleep(0.01)
    delivering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivering
    assert [error.reason for error in run.withdrawn] == [Reason.DEADLINE_EXCEEDED]


async def test_an_answer_made_too_late_for_its_caller_is_recorded_as_not_delivered() -> None:
    caller = Caller(0.2)

    async def made() -> str:
        caller.remaining = 0.01  # the answer took the caller's time but the margin
        return "answer"

    run = Answer(caller)
    with pytest.raises(GatewayError) as caught:
        await answer_in_time(call(caller), run, made())
    assert caught.value.reason is Reason.DEADLINE_EXCEEDED
    assert [error.reason for error in run.not_delivered] == [Reason.DEADLINE_EXCEEDED]


async def test_an_answer_not_made_before_the_margin_is_abandoned() -> None:
    caller = Caller(0.1)
    run = Answer(caller)
    with pytest.raises(GatewayError) as caught:
        await answer_in_time(call(caller), run, asyncio.sleep(5, "never"))
    assert caught.value.reason is Reason.DEADLINE_EXCEEDED
    assert not run.not_delivered  # nothing was made: the meter records the error as the call's end
