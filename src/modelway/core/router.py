"""Carries one call to the first candidate that answers: breakers, retries with backoff, fallbacks, deadline.

An attempt counts as answered when its first event arrives. Before that, a
retryable failure (connect error, timeout, 429, 5xx, a stream cut before its
first token) is tried again on the same model after an exponential backoff
with jitter (or the upstream's Retry-After, when that is short enough), then
on the next candidate; a failure that is the caller's fault (the upstream
rejected the request as invalid) ends the call at once. After the first
event nothing is retried: the failure goes to the caller, who has already
received part of the answer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import TypeVar

from modelway.config import ModelConfig, RoutingConfig
from modelway.core.breaker import Breaker, Breakers
from modelway.core.clock import Clock
from modelway.core.routing import prepare
from modelway.core.types import ChatRequest, GeneratedImage, ImageRequest, StreamEvent
from modelway.errors import GatewayError, Reason
from modelway.ops.metrics import Telemetry
from modelway.providers.base import ChatProvider, MalformedAnswer
from modelway.providers.registry import ProviderRegistry

__all__ = ["Router"]

# What the caller did wrong, not the upstream: no retry, no fallback, no breaker failure.
_CALLER_FAULTS = frozenset({Reason.UPSTREAM_REJECTED, Reason.CONTEXT_LENGTH_EXCEEDED})
# Retry-After when nothing better is known.
_DEFAULT_RETRY_AFTER = 5.0

# One attempt on one model: the provider, the request as that model receives it, the model's name
# upstream and the seconds left; raises GatewayError when the attempt did not answer.
Answer = TypeVar("Answer")
Attempt = Callable[[ChatProvider, ChatRequest, str, float], Awaitable[Answer]]


class Router:
    def __init__(
        self,
        providers: ProviderRegistry,
        breakers: Breakers,
        config: RoutingConfig,
        clock: Clock,
        jitter: Callable[[], float] = random.random,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._providers = providers
        self._breakers = breakers
        self._config = config
        self._clock = clock
        self._jitter = jitter
        self._telemetry = telemetry or Telemetry()

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before trying the same model again; None when it is not worth waiting."""
        config = self._config
        delay: float = min(config.max_backoff_seconds, config.backoff_seconds * 2.0**attempt) * (
            0.5 + self._jitter() / 2
        )
        if retry_after is not None:
            if retry_after > config.max_backoff_seconds:
                return None  # asked to come back later than we would hold a caller: try the next model
            delay = max(delay, retry_after)
        return delay

    async def _waited_to_retry(self, error: GatewayError, attempt: int, deadline: float) -> bool:
        """After a failed attempt: waits the backoff and says True when the same model may be tried
        again; False when it may not (not retryable, retries spent, or the wait would pass the deadline)."""
        if not error.retryable or attempt >= self._config.retries:
            return False
        delay = self._backoff(attempt, error.retry_after)
        if delay is None or self._clock.monotonic() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True

    async def stream(
        self,
        request: ChatRequest,
        candidates: Sequence[ModelConfig],
        on_attempt: Callable[[ModelConfig], None],
    ) -> AsyncGenerator[StreamEvent, None]:
        """The events of the first candidate that answers; `on_attempt` learns of each model tried,
        so the last one it heard of before the first event is the one that answers."""
        (first, events), breaker, probe = await self._first_answer(request, candidates, on_attempt, _opened)
        async with aclosing(events):
            yield first
            try:
                async for event in events:
                    yield event
            except GatewayError as broken:
                if broken.reason not in _CALLER_FAULTS:
                    breaker.failed(probe)
                raise

    async def complete(
        self,
        request: ChatRequest,
        candidates: Sequence[ModelConfig],
        on_attempt: Callable[[ModelConfig], None],
    ) -> Sequence[StreamEvent]:
        """Every event `stream` gives, at once. An answer the upstream sends whole (one JSON body) is
        routed like a stream with no generator between caller and upstream; a streamed one is `stream`'s,
        answered from its first event (nothing after it is retried)."""
        if request.stream:
            async with aclosing(self.stream(request, candidates, on_attempt)) as events:
                return [event async for event in events]
        answer, _, _ = await self._first_answer(request, candidates, on_attempt, _whole)
        return answer

    async def _first_answer(
        self,
        request: ChatRequest,
        candidates: Sequence[ModelConfig],
        on_attempt: Callable[[ModelConfig], None],
        attempt: Attempt[Answer],
    ) -> tuple[Answer, Breaker, bool]:
        """What `attempt` made of the first candidate that answered, with that candidate's breaker and
        whether the attempt was its probe (a failure later in the answer still counts against it)."""
        deadline = self._clock.monotonic() + self._config.deadline_seconds
        failure: GatewayError | None = None
        unsupported: GatewayError | None = None
        for model in candidates:
            breaker = self._breakers[model.provider]
            provider = self._providers.get(model.provider)
            tries = 0
            while True:
                probe = breaker.state != "closed"
                if not breaker.allow():
                    break
                on_attempt(model)
                started = self._clock.monotonic()
                try:
                    answer = await attempt(provider, prepare(request, model), model.upstream_name, deadline - started)
                except GatewayError as exc:
                    error = exc
                except BaseException:
                    breaker.released(probe)
                    raise
                else:
                    self._telemetry.upstream_attempt(model.provider, "ok", self._clock.monotonic() - started)
                    breaker.succeeded(self._clock.monotonic() - started)
                    return answer, breaker, probe
                self._telemetry.upstream_attempt(model.provider, error.reason.value, self._clock.monotonic() - started)
                if error.reason == Reason.INVALID_VALUE:
                    # This wire format cannot express the request (n > 1 to Anthropic, ...): another may.
                    breaker.released(probe)
                    unsupported = unsupported or error
                    break
                if error.reason in _CALLER_FAULTS:
                    breaker.released(probe)
                    raise error
                breaker.failed(probe)
                failure = error
                if not await self._waited_to_retry(error, tries, deadline):
                    break
                tries += 1
            if self._clock.monotonic() >= deadline:
                break
        if failure is None and unsupported is not None:
            raise unsupported
        raise self._exhausted(candidates, failure)

    async def images(
        self, request: ImageRequest, candidates: Sequence[ModelConfig], on_attempt: Callable[[ModelConfig], None]
    ) -> tuple[GeneratedImage, ...]:
        """The images of the first candidate that makes them: the same breakers, retries, fallbacks and
        deadline as a chat call, with one whole answer in place of a stream."""
        deadline = self._clock.monotonic() + self._config.deadline_seconds
        failure: GatewayError | None = None
        for model in candidates:
            provider = self._providers.images(model.provider)
            if provider is None:
                failure = failure or GatewayError(
                    Reason.INVALID_VALUE,
                    f"The model `{model.id}` cannot generate images: its provider has no images API.",
                    param="model",
                )
                continue
            breaker = self._breakers[model.provider]
            attempt = 0
            while breaker.allow():
                probe = breaker.state != "closed"
                on_attempt(model)
                started = self._clock.monotonic()
                try:
                    images = await provider.generate_images(
                        replace(request, model=model.id), model.upstream_name, timeout=deadline - started
                    )
                except GatewayError as error:
                    self._telemetry.upstream_attempt(
                        model.provider, error.reason.value, self._clock.monotonic() - started
                    )
                    if error.reason in _CALLER_FAULTS:
                        breaker.released(probe)
                        raise
                    if isinstance(error, MalformedAnswer):
                        # Not the upstream's availability, and another attempt would pay for new images.
                        breaker.released(probe)
                        raise GatewayError(error.reason, error.message) from None
                    breaker.failed(probe)
                    failure = error
                    if not await self._waited_to_retry(error, attempt, deadline):
                        break
                    attempt += 1
                    continue
                except BaseException:
                    breaker.released(probe)
                    raise
                self._telemetry.upstream_attempt(model.provider, "ok", self._clock.monotonic() - started)
                breaker.succeeded(self._clock.monotonic() - started)
                return images
            if self._clock.monotonic() >= deadline:
                break
        raise self._exhausted(candidates, failure)

    def _exhausted(self, candidates: Sequence[ModelConfig], failure: GatewayError | None) -> GatewayError:
        """Every candidate failed or was skipped: 502 when retrying cannot help, else 503 with Retry-After."""
        if failure is not None and not failure.retryable:
            return failure
        waits = [self._breakers[model.provider].retry_in() for model in candidates]
        retry_after = (failure.retry_after if failure else None) or min(waits, default=0.0) or _DEFAULT_RETRY_AFTER
        detail = (
            f" The last attempt failed: {failure.message}" if failure else " Every provider is resting after failures."
        )
        return GatewayError(
            Reason.SERVICE_UNAVAILABLE,
            f"No upstream provider could serve the request now.{detail}",
            retry_after=retry_after,
        )


def _no_output() -> GatewayError:
    return GatewayError(
        Reason.PROVIDER_ERROR, "The upstream provider ended the answer without any output.", retryable=True
    )


async def _opened(
    provider: ChatProvider, request: ChatRequest, upstream_model: str, timeout: float
) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None]]:
    """A stream that has answered: its first event, and the stream for the rest."""
    events = provider.stream_chat(request, upstream_model, timeout=timeout)
    try:
        return await anext(events), events
    except StopAsyncIteration:
        raise _no_output() from None
    except BaseException:
        await events.aclose()
        raise


async def _whole(
    provider: ChatProvider, request: ChatRequest, upstream_model: str, timeout: float
) -> Sequence[StreamEvent]:
    """A whole answer, which is an answer when it holds any event."""
    events = await provider.complete_chat(request, upstream_model, timeout=timeout)
    if not events:
        raise _no_output()
    return events
