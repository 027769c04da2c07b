"""One step of an async generator driven by hand, to learn whether its next item is ready without waiting.

A stream relays an upstream's events as they come; several often arrive in
one read (a fast model, a proxy that buffers). Sending each as its own gRPC
message costs a write and a wake-up per event in the server and in Envoy;
sending what is ready as one message costs one. `Pull` starts `anext()` on a
generator and runs it as far as it goes without waiting: either it produced
an item (`ready`), or it ended (`exhausted`), or it waits on a future, and
then the caller may first send what it has gathered and `await` the pull
afterwards (or `abandon` it). Nothing is delayed: an item is only ever held
while the next one is being produced without any wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, Generic, TypeVar, cast

__all__ = ["Pull"]

T = TypeVar("T")


class Pull(Generic[T]):
    """`anext(source)`, run at once as far as it goes without waiting (see the module doc)."""

    __slots__ = ("_step", "_waiting", "exhausted", "ready", "value")

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._step = cast(Coroutine[Any, Any, T], source.__anext__())
        self._waiting: Any = None
        self.ready = False
        self.exhausted = False
        self.value: T | None = None
        try:
            self._waiting = self._step.send(None)
        except StopIteration as done:
            self.ready, self.value = True, cast(T, done.value)
        except StopAsyncIteration:
            self.ready = self.exhausted = True

    def __await__(self) -> Generator[Any, Any, T]:
        """The item of a pull that waited (StopAsyncIteration when the source ended meanwhile).

        Passes what the source waits on to the awaiting task and the task's answers (results,
        cancellation) back to the source, as `await` itself would.
        """
        waiting = self._waiting
        while True:
            try:
                answer = yield waiting
            except BaseException as exc:
                try:
                    waiting = self._step.throw(exc)
                except StopIteration as done:
                    return cast(T, done.value)
            else:
                try:
                    waiting = self._step.send(answer)
                except StopIteration as done:
                    return cast(T, done.value)

    async def abandon(self) -> None:
        """Ends a pull that waited and is no longer wanted: the source is cancelled where it waits and
        runs its own cleanup (closing an upstream response, say) to its end. A source left half-way
        would stay "running" and could never be closed."""
        try:
            self._waiting = self._step.throw(asyncio.CancelledError())
        except BaseException:
            return  # it ended at once
        # The cancellation, or what its cleanup raised, comes out: the source has ended either way.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self
