"""The router over the real HTTP transport against a scripted OpenAI upstream: deadlines and timeouts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from modelway.config import ModelConfig, ProviderConfig, RoutingConfig
from modelway.core.breaker import Breakers
from modelway.core.clock import SystemClock
from modelway.core.router import Router
from modelway.core.types import ChatRequest, ChoiceDelta, Message, StreamEvent, TextPart, Usage
from modelway.errors import GatewayError, Reason
from modelway.providers.http import Transport
from modelway.providers.registry import ProviderRegistry
from tests.fakes import openai as fake
from tests.fakes.server import FakeUpstream, Hang, Json, Sse

MODEL = ModelConfig(id="gpt", provider="up")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = fake.start()
    yield server
    server.stop()


@pytest.fixture
async def transport(upstream: FakeUpstream) -> AsyncIterator[Transport]:
    upstream.reset()
    transport = Transport()
    await transport.start()
    yield transport
    await transport.close()


def router(upstream: FakeUpstream, transport: Transport, *, deadline: float = 60, first_byte: float = 5) -> Router:
    provider = ProviderConfig(
        name="up", kind="openai", base_url=upstream.base_url + "/v1", first_byte_timeout_seconds=first_byte
    )
    clock = SystemClock()
    routing = RoutingConfig(retries=3, backoff_seconds=0.01, deadline_seconds=deadline)
    breakers = Breakers(["up"], threshold=10, cooldown=30, clock=clock)
    return Router(ProviderRegistry([provider], transport), breakers, routing, clock)


def chat(stream: bool = False) -> ChatRequest:
    return ChatRequest(model="gpt", messages=(Message(role="user", content=(TextPart("hi"),)),), stream=stream)


async def collect(route: Router, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in route.stream(request, [MODEL], lambda model: None)]


async def test_the_call_deadline_bounds_every_attempt_together(upstream: FakeUpstream, transport: Transport) -> None:
    upstream.script(Hang(2), Hang(2))
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await collect(router(upstream, transport, deadline=0.5), chat())
    elapsed = time.monotonic() - started
    assert caught.value.reason is Reason.SERVICE_UNAVAILABLE
    assert "timed out" in caught.value.message
    assert 0.4 < elapsed < 2.0
    assert len(upstream.requests) == 1  # no time was left for a retry


async def test_a_slow_whole_answer_is_not_cut_by_the_first_byte_timeout(
    upstream: FakeUpstream, transport: Transport
) -> None:
    upstream.script(Json(fake.chat_json("thought long"), delay=0.6))
    events = await collect(router(upstream, transport, first_byte=0.2), chat())
    assert events[0] == ChoiceDelta(index=0, content="thought long", finish_reason="stop")
    assert events[-1] == Usage(10, 3)
    assert len(upstream.requests) == 1


async def test_a_stream_that_does_not_start_in_time_is_retried(upstream: FakeUpstream, transport: Transport) -> None:
    upstream.script(Sse(fake.chat_stream(("late",)), delay=0.6))
    events = await collect(router(upstream, transport, first_byte=0.2), chat(stream=True))
    assert "".join(e.content for e in events if isinstance(e, ChoiceDelta)) == "Echo: hi"
    assert len(upstream.requests) == 2
