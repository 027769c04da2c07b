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


async def whole(route: Router, request: ChatRequest, candidates: list[ModelConfig] | None = None) -> list[StreamEvent]:
    return list(await route.complete(request, candidates or [MODEL], lambda model: None))


async def test_a_whole_answer_is_the_events_a_stream_of_it_gives(upstream: FakeUpstream, transport: Transport) -> None:
    answer = Json(fake.chat_json("all at once"))
    upstream.script(answer, answer)
    route = router(upstream, transport)
    events = await whole(route, chat())
    assert events == [ChoiceDelta(index=0, content="all at once", finish_reason="stop"), Usage(10, 3)]
    assert events == await collect(route, chat())


async def test_a_whole_answer_is_retried_after_a_failure_and_an_empty_answer(
    upstream: FakeUpstream, transport: Transport
) -> None:
    empty = {**fake.chat_json("unused"), "choices": []}
    empty.pop("usage")
    upstream.script(Json(fake.error_json("busy", "server_error"), status=503), Json(empty))
    events = await whole(router(upstream, transport), chat())
    assert events[0] == ChoiceDelta(index=0, content="Echo: hi", finish_reason="stop")
    assert len(upstream.requests) == 3


async def test_a_whole_answer_the_upstream_rejects_is_not_retried(upstream: FakeUpstream, transport: Transport) -> None:
    upstream.script(Json(fake.error_json("bad temperature", param="temperature"), status=400))
    with pytest.raises(GatewayError) as caught:
        await whole(router(upstream, transport), chat())
    assert caught.value.reason is Reason.UPSTREAM_REJECTED
    assert "bad temperature" in caught.value.message
    assert len(upstream.requests) == 1


async def test_whole_answers_that_never_come_end_in_503(upstream: FakeUpstream, transport: Transport) -> None:
    upstream.script(*[Json(fake.error_json("down", "server_error"), status=500)] * 4)
    with pytest.raises(GatewayError) as caught:
        await whole(router(upstream, transport), chat())
    assert caught.value.reason is Reason.SERVICE_UNAVAILABLE
    assert "The last attempt failed" in caught.value.message
    assert len(upstream.requests) == 4  # the first attempt and 3 retries


async def test_a_whole_answer_to_a_streamed_request_gathers_its_events(
    upstream: FakeUpstream, transport: Transport
) -> None:
    route = router(upstream, transport)
    events = await whole(route, chat(stream=True))
    assert events == await collect(route, chat(stream=True))
    assert "".join(e.content for e in events if isinstance(e, ChoiceDelta)) == "Echo: hi"
    assert upstream.requests[0].json["stream"] is True


async def test_a_whole_answer_falls_back_to_the_next_candidate(upstream: FakeUpstream, transport: Transport) -> None:
    upstream.script(*[Json(fake.error_json("down", "server_error"), status=500)] * 4, Json(fake.chat_json("from b")))
    second = ModelConfig(id="gpt-b", provider="up", upstream_model="b")
    tried: list[str] = []
    events = await router(upstream, transport).complete(chat(), [MODEL, second], lambda model: tried.append(model.id))
    assert events[0] == ChoiceDelta(index=0, content="from b", finish_reason="stop")
    assert tried == ["gpt"] * 4 + ["gpt-b"]
    assert [received.json["model"] for received in upstream.requests] == ["gpt"] * 4 + ["b"]


async def test_a_streamed_whole_answer_cut_after_its_first_event_is_not_retried(
    upstream: FakeUpstream, transport: Transport
) -> None:
    upstream.script(Sse(fake.chat_stream(("half", "way")), cut=2))
    with pytest.raises(GatewayError) as caught:
        await whole(router(upstream, transport), chat(stream=True))
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert len(upstream.requests) == 1  # the answer had begun: another attempt would bill it again
