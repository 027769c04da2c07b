"""Tests for the offline EchoProvider: literal requests in, exact streams out."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from modelway.core.tokens import count_message_tokens, count_tokens, split_tokens
from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    StreamEvent,
    TextPart,
    ToolChoice,
    Usage,
)
from modelway.errors import GatewayError, Reason
from modelway.providers.base import ChatProvider
from modelway.providers.echo import EchoProvider

WEATHER = FunctionTool(
    name="get_weather",
    description="Current weather",
    parameters={
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["location", "unit", "days"],
        "additionalProperties": False,
    },
    strict=True,
)
SEARCH = FunctionTool(name="search", parameters={"type": "object", "properties": {"query": {"type": "string"}}})


def user(text: str, images: int = 0) -> Message:
    parts: tuple[TextPart | ImagePart, ...] = (TextPart(text),) if text else ()
    return Message(role="user", content=parts + (ImagePart(url="https://example.com/i.png"),) * images)


def request(text: str = "Hello there", **kwargs: Any) -> ChatRequest:
    return ChatRequest(model="echo", messages=(user(text),), **kwargs)


def run(req: ChatRequest, provider: ChatProvider | None = None) -> list[StreamEvent]:
    async def collect() -> list[StreamEvent]:
        return [event async for event in (provider or EchoProvider()).stream_chat(req, "echo-1", timeout=30.0)]

    events = asyncio.run(collect())
    check_shape(events, req.n)
    return events


def check_shape(events: Sequence[StreamEvent], n: int) -> None:
    """The stream contract: per choice, content then one bare finish; one Usage last."""
    assert isinstance(events[-1], Usage)
    assert not any(isinstance(event, Usage) for event in events[:-1])
    for index in range(n):
        deltas = [e for e in events if isinstance(e, ChoiceDelta) and e.index == index]
        finishes = [d for d in deltas if d.finish_reason is not None]
        assert len(finishes) == 1
        assert deltas[-1] is finishes[0]
        assert finishes[0].content == "" and finishes[0].tool_calls == ()
    assert {e.index for e in events if isinstance(e, ChoiceDelta)} == set(range(n))


def text_of(events: Sequence[StreamEvent], index: int = 0) -> str:
    return "".join(e.content for e in events if isinstance(e, ChoiceDelta) and e.index == index)


def finish_of(events: Sequence[StreamEvent], index: int = 0) -> str | None:
    return next(e.finish_reason for e in events if isinstance(e, ChoiceDelta) and e.index == index and e.finish_reason)


def usage_of(events: Sequence[StreamEvent]) -> Usage:
    last = events[-1]
    assert isinstance(last, Usage)
    return last


def arguments_of(events: Sequence[StreamEvent], index: int = 0) -> tuple[str, str, str]:
    """(id, name, arguments) of the one tool call of a choice."""
    calls = [c for e in events if isinstance(e, ChoiceDelta) and e.index == index for c in e.tool_calls]
    assert calls and all(c.index == 0 for c in calls)
    assert calls[0].id and calls[0].name and calls[0].arguments == ""
    assert all(not c.id and not c.name for c in calls[1:])
    return calls[0].id, calls[0].name, "".join(c.arguments for c in calls[1:])


def test_echoes_last_user_message_token_by_token() -> None:
    req = ChatRequest(
        model="echo",
        messages=(
            Message(role="system", content=(TextPart("Be brief."),)),
            user("first question"),
            Message(role="assistant", content=(TextPart("an answer"),)),
            user("Hello there, friend!"),
        ),
    )
    events = run(req)
    content = [e.content for e in events if isinstance(e, ChoiceDelta) and e.content]
    assert content == split_tokens("Echo: Hello there, friend!")
    assert finish_of(events) == "stop"
    assert usage_of(events) == Usage(prompt_tokens=count_message_tokens(req.messages), completion_tokens=7)


def test_without_user_message() -> None:
    req = ChatRequest(model="echo", messages=(Message(role="system", content=(TextPart("sys"),)),))
    assert text_of(run(req)) == "Echo: (no user message)"


def test_images_are_marked() -> None:
    req = ChatRequest(model="echo", messages=(user("look", images=2),))
    assert text_of(run(req)) == "Echo: look [image] [image]"


def test_stop_cuts_before_the_earliest_sequence() -> None:
    events = run(request("one two three four", stop=("four", " two")))
    assert text_of(events) == "Echo: one"
    assert finish_of(events) == "stop"
    assert usage_of(events).completion_tokens == 3


def test_max_tokens_cuts_with_length() -> None:
    events = run(request("one two three four", max_tokens=3))
    assert text_of(events) == "Echo: one"
    assert finish_of(events) == "length"
    assert usage_of(events).completion_tokens == 3


def test_max_tokens_exactly_enough_is_a_normal_stop() -> None:
    events = run(request("one two", max_tokens=4))
    assert text_of(events) == "Echo: one two"
    assert finish_of(events) == "stop"


def test_two_choices_interleave_and_both_count() -> None:
    events = run(request("a b", n=2))
    assert text_of(events, 0) == text_of(events, 1) == "Echo: a b"
    indices = [e.index for e in events if isinstance(e, ChoiceDelta)]
    assert indices == [0, 1] * (len(indices) // 2)
    assert usage_of(events).completion_tokens == 2 * count_tokens("Echo: a b")


def test_named_function_call_arguments_match_schema() -> None:
    req = request("Weather in Paris?", tools=(SEARCH, WEATHER), tool_choice=ToolChoice("function", "get_weather"))
    events = run(req)
    call_id, name, arguments = arguments_of(events)
    assert re.fullmatch(r"call_[0-9a-f]{24}", call_id)
    assert name == "get_weather"
    parsed = json.loads(arguments)
    assert parsed == {"location": "Weather in Paris?", "unit": "celsius", "days": 1}
    assert text_of(events) == ""
    assert finish_of(events) == "tool_calls"
    assert usage_of(events).completion_tokens == count_tokens(name) + count_tokens(arguments)
    # Arguments arrive in several fragments, as from a real model.
    assert sum(1 for e in events if isinstance(e, ChoiceDelta) and e.tool_calls) > 3


def test_call_ids_are_deterministic_and_distinct_per_choice() -> None:
    req = request("x", n=2, tools=(WEATHER,), tool_choice=ToolChoice("required"))
    first, second = run(req), run(req)
    assert arguments_of(first, 0) == arguments_of(second, 0)
    assert arguments_of(first, 0)[0] != arguments_of(first, 1)[0]
    assert arguments_of(first, 0)[1:] == arguments_of(first, 1)[1:]


def test_unknown_named_function_is_invalid() -> None:
    req = request(tools=(WEATHER,), tool_choice=ToolChoice("function", "nope"))
    with pytest.raises(GatewayError) as caught:
        run(req)
    assert caught.value.reason is Reason.INVALID_VALUE
    assert caught.value.http_status == 400
    assert caught.value.param == "tool_choice"


def test_required_without_tools_is_invalid() -> None:
    with pytest.raises(GatewayError) as caught:
        run(request(tool_choice=ToolChoice("required")))
    assert caught.value.reason is Reason.INVALID_VALUE
    assert caught.value.param == "tool_choice"


def test_required_calls_first_tool() -> None:
    _, name, arguments = arguments_of(run(request("hi", tools=(SEARCH, WEATHER), tool_choice=ToolChoice("required"))))
    assert name == "search"
    assert json.loads(arguments) == {"query": "hi"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("please use a tool", "search"),
        ("Use your TOOLS", "search"),
        ("call GET_WEATHER now", "get_weather"),
        ("just chat", None),
        ("toolbox talk", None),
    ],
)
def test_auto_calls_a_tool_only_when_asked(text: str, expected: str | None) -> None:
    events = run(request(text, tools=(SEARCH, WEATHER)))
    if expected is None:
        assert text_of(events) == f"Echo: {text}"
        assert finish_of(events) == "stop"
    else:
        assert arguments_of(events)[1] == expected
        assert finish_of(events) == "tool_calls"


def test_none_never_calls_tools() -> None:
    events = run(request("use a tool", tools=(WEATHER,), tool_choice=ToolChoice("none")))
    assert text_of(events) == "Echo: use a tool"


def test_tool_call_cut_by_max_tokens() -> None:
    req = request("Paris", tools=(WEATHER,), tool_choice=ToolChoice("required"), max_tokens=5)
    events = run(req)
    _, name, arguments = arguments_of(events)
    assert finish_of(events) == "length"
    assert count_tokens(name) + count_tokens(arguments) == 5
    assert usage_of(events).completion_tokens == 5
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


def test_json_object() -> None:
    events = run(request("hi there", response_format=ResponseFormat("json_object")))
    assert json.loads(text_of(events)) == {"echo": "Echo: hi there"}
    assert usage_of(events).completion_tokens == count_tokens(text_of(events))


def test_json_object_cut_by_max_tokens_is_invalid_json() -> None:
    events = run(request("hi there", response_format=ResponseFormat("json_object"), max_tokens=4))
    assert finish_of(events) == "length"
    assert usage_of(events).completion_tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(events))


def test_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0.5, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["answer", "confidence", "tags"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat("json_schema", name="reply", schema=schema, strict=True)
    value = json.loads(text_of(run(request("hi", response_format=fmt))))
    assert set(value) == {"answer", "confidence", "tags"}
    assert value["answer"] == "hi"
    assert isinstance(value["confidence"], int | float) and 0.5 <= value["confidence"] <= 1
    assert value["tags"] and all(isinstance(tag, str) for tag in value["tags"])


def test_usage_prompt_counts_messages() -> None:
    req = request("count me")
    assert usage_of(run(req)).prompt_tokens == 3 + 3 + count_tokens("count me")


def test_token_delay_yields_to_cancellation() -> None:
    async def consume() -> None:
        async for _ in EchoProvider(token_delay=10.0).stream_chat(request(), "echo-1"):
            pass

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consume(), timeout=0.05)

    asyncio.run(main())


def test_negative_delay_rejected() -> None:
    with pytest.raises(ValueError):
        EchoProvider(token_delay=-1)


def test_many_choices_of_a_long_text_are_bounded_in_deltas() -> None:
    """n=128 of a 4,000-word echo: at most 4,096 deltas (plus one finish each), the text unchanged."""
    words = " ".join(f"word{i}" for i in range(4000))
    events = run(request(words, n=128))
    check_shape(events, 128)
    deltas = [e for e in events if isinstance(e, ChoiceDelta)]
    assert len(deltas) <= 4096 + 128
    for index in (0, 127):
        assert text_of(events, index) == "Echo: " + words
    assert usage_of(events).completion_tokens == 128 * count_tokens("Echo: " + words)


@pytest.mark.parametrize("req", [request(), request("what is the weather", tools=(WEATHER,)), request(n=3)])
def test_a_whole_answer_is_every_event_of_the_stream(req: ChatRequest) -> None:
    whole = asyncio.run(EchoProvider().complete_chat(req, "echo-1", timeout=30.0))
    assert list(whole) == run(req)
