"""Tests for the Anthropic Messages translator: literal requests and documented-shape answers in, exact events out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from modelway.errors import GatewayError, Reason
from modelway.providers.anthropic import AnthropicTranslator
from modelway.providers.base import SseEvent, Upstream
from tests.fakes import anthropic as fake
from tests.fakes.server import Json, Received, Sse

UPSTREAM = Upstream(
    base_url="https://api.anthropic.com",
    model="claude-sonnet-4-5",
    api_key="sk-ant-test",
    headers={"anthropic-beta": "prompt-caching-2024-07-31"},
)
WEATHER = FunctionTool(
    name="get_weather",
    description="Current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = FunctionTool(name="get_time")


def user(text: str) -> Message:
    return Message(role="user", content=(TextPart(text),))


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(model="claude", messages=messages or (user("Hi"),), **fields)


def translator(request: ChatRequest | None = None) -> AnthropicTranslator:
    return AnthropicTranslator(request or chat(), UPSTREAM)


def body_of(request: ChatRequest) -> Any:
    return orjson.loads(translator(request).request().body)


def sse(event: str, data: str) -> SseEvent:
    return SseEvent(data=data, event=event)


def parse_frames(frames: Sequence[str | bytes]) -> list[SseEvent]:
    """Raw Anthropic SSE frames as the transport would hand them over."""
    events = []
    for raw in frames:
        text = raw.decode() if isinstance(raw, bytes) else f"data: {raw}\n\n"
        name, data = "", []
        for line in text.strip("\n").split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append(SseEvent(data="\n".join(data), event=name))
    return events


def feed(t: AnthropicTranslator, events: Sequence[SseEvent]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for event in events:
        out.extend(t.sse_event(event))
    out.extend(t.end())
    return out


def call_piece(index: int, *, id: str = "", name: str = "", arguments: str = "") -> ChoiceDelta:
    return ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=index, id=id, name=name, arguments=arguments),))


# --- the request ---------------------------------------------------------------------------------------------


def test_request_url_headers_and_minimal_body() -> None:
    http = translator(chat(user("Hello"), max_tokens=100)).request()
    assert http.url == "https://api.anthropic.com/v1/messages"
    assert dict(http.headers) == {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "anthropic-beta": "prompt-caching-2024-07-31",
    }
    assert http.streaming is False
    assert orjson.loads(http.body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }


def test_max_tokens_defaults_when_unset_and_stream_flag() -> None:
    t = translator(chat(user("Hi"), stream=True))
    assert t.request().streaming is True
    body = orjson.loads(t.request().body)
    assert body["max_tokens"] == 4096
    assert body["stream"] is True


def test_rich_request_body() -> None:
    request = chat(
        Message(role="system", content=(TextPart("You are terse."),)),
        Message(role="developer", content=(TextPart("Use metric units."),)),
        Message(
            role="user",
            content=(
                TextPart("What is in these pictures, and the weather?"),
                ImagePart(url="data:image/png;base64,iVBORw0KGgo="),
                ImagePart(url="https://example.com/cat.jpg", detail="high"),
            ),
        ),
        Message(
            role="assistant",
            content=(TextPart("Let me check."),),
            tool_calls=(
                ToolCall(id="toolu_01", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="toolu_02", name="get_time", arguments=""),
            ),
        ),
        Message(role="tool", tool_call_id="toolu_01", content=(TextPart("18C, cloudy"),)),
        Message(role="tool", tool_call_id="toolu_02", content=(TextPart("12:00"),)),
        user("Thanks. And tomorrow?"),
        max_tokens=512,
        temperature=1.5,
        top_p=0.9,
        stop=("END", "\n\nHuman:"),
        tools=(WEATHER, CLOCK),
        tool_choice=ToolChoice(mode="function", function_name="get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat(type="json_object"),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"50256": -100},
        user="user-42",
        stream=True,
    )
    assert body_of(request) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "system": "You are terse.\n\nUse metric units.\n\n"
        "Answer with only a JSON object: no other text, no code fences.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these pictures, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, cloudy"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "12:00"},
                    {"type": "text", "text": "Thanks. And tomorrow?"},
                ],
            },
        ],
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END", "\n\nHuman:"],
        "stream": True,
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
            {"name": "get_time", "description": "", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-42"},
    }


def test_consecutive_same_role_turns_merge() -> None:
    body = body_of(
        chat(
            user("one"),
            user("two"),
            Message(role="assistant", content=(TextPart("a"),)),
            Message(role="assistant", content=(TextPart("b"),)),
            Message(role="user", content=(TextPart(""),)),  # empty: dropped, not sent as an empty turn
            user("three"),
        )
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "text", "text": "three"}]},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice(mode="auto"), True, {"type": "auto"}),
        (ToolChoice(mode="auto"), False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice(mode="required"), True, {"type": "any"}),
        (ToolChoice(mode="required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (ToolChoice(mode="function", function_name="get_time"), True, {"type": "tool", "name": "get_time"}),
        (ToolChoice(mode="none"), True, {"type": "none"}),
        (ToolChoice(mode="none"), False, {"type": "none"}),
    ],
)
def test_tool_choice(choice: ToolChoice, parallel: bool, expected: dict[str, Any]) -> None:
    body = body_of(chat(tools=(WEATHER, CLOCK), tool_choice=choice, parallel_tool_calls=parallel))
    assert body["tool_choice"] == expected


def test_no_tools_means_no_tool_choice() -> None:
    body = body_of(chat(tool_choice=ToolChoice(mode="none")))
    assert "tools" not in body and "tool_choice" not in body


def test_json_schema_goes_into_the_system_prompt() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body = body_of(chat(user("Hi"), response_format=ResponseFormat(type="json_schema", name="a", schema=schema)))
    assert body["system"] == (
        "Answer with only a JSON object that conforms to this JSON Schema, no other text, no code fences: "
        '{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}'
    )


def test_temperature_within_range_passes_unchanged() -> None:
    assert body_of(chat(temperature=0.3))["temperature"] == 0.3
    assert body_of(chat(temperature=0.0))["temperature"] == 0.0


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (chat(n=2), "n"),
        (chat(logprobs=True), "logprobs"),
        (
            chat(
                user("x"),
                Message(role="assistant", tool_calls=(ToolCall(id="t", name="f", arguments="{not json"),)),
            ),
            "messages[1].tool_calls",
        ),
        (
            chat(user("x"), Message(role="assistant", tool_calls=(ToolCall(id="t", name="f", arguments="[1]"),))),
            "messages[1].tool_calls",
        ),
        (chat(Message(role="user", content=(ImagePart(url="ftp://example.com/a.png"),))), "messages[0].content"),
    ],
)
def test_inexpressible_requests_are_rejected(request_: ChatRequest, param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        translator(request_)
    assert caught.value.reason is Reason.INVALID_VALUE
    assert caught.value.param == param


# --- whole JSON answers --------------------------------------------------------------------------------------

TEXT_ANSWER = b"""{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5",
  "content": [{"type": "text", "text": "Hi! My name is Claude."}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {"input_tokens": 2095, "output_tokens": 503}
}"""

TOOL_ANSWER = b"""{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5",
  "content": [
    {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
    {"type": "text", "text": "I'll check the weather."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
     "input": {"city": "San Francisco", "unit": "celsius"}},
    {"type": "tool_use", "id": "toolu_02B", "name": "get_time", "input": {}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
            "output_tokens": 40}
}"""


def test_json_text_answer() -> None:
    assert translator().json_body(TEXT_ANSWER) == [
        ChoiceDelta(index=0, content="Hi! My name is Claude."),
        ChoiceDelta(index=0, finish_reason="stop"),
        Usage(prompt_tokens=2095, completion_tokens=503),
    ]


def test_json_tool_answer_with_cached_prompt_tokens() -> None:
    assert translator().json_body(TOOL_ANSWER) == [
        ChoiceDelta(
            index=0,
            content="I'll check the weather.",
            tool_calls=(
                ToolCallDelta(
                    index=0,
                    id="toolu_01A09q90qw90lq917835lq9",
                    name="get_weather",
                    arguments='{"city":"San Francisco","unit":"celsius"}',
                ),
                ToolCallDelta(index=1, id="toolu_02B", name="get_time", arguments="{}"),
            ),
        ),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
        Usage(prompt_tokens=150, completion_tokens=40),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_json_finish_reasons(stop_reason: str | None, finish: str) -> None:
    data = fake.chat_json("x", stop_reason=stop_reason)
    data["stop_reason"] = stop_reason
    events = translator().json_body(orjson.dumps(data))
    assert events[1] == ChoiceDelta(index=0, finish_reason=finish)  # type: ignore[arg-type]


def test_json_round_trip_through_the_fake() -> None:
    calls = [ToolCall(id="toolu_9", name="get_weather", arguments='{"city":"Oslo"}')]
    data = fake.chat_json("Checking.", calls, input_tokens=12, output_tokens=7)
    assert translator().json_body(orjson.dumps(data)) == [
        ChoiceDelta(
            index=0,
            content="Checking.",
            tool_calls=(ToolCallDelta(index=0, id="toolu_9", name="get_weather", arguments='{"city":"Oslo"}'),),
        ),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
        Usage(prompt_tokens=12, completion_tokens=7),
    ]


def test_json_error_inside_a_200_body() -> None:
    with pytest.raises(GatewayError) as caught:
        translator().json_body(orjson.dumps(fake.error_json("overloaded_error", "Overloaded")))
    assert caught.value.reason is Reason.UPSTREAM_OVERLOADED
    assert caught.value.retryable is True


@pytest.mark.parametrize("body", [b"not json", b'{"type": "message", "content": 3}', b"[]", b""])
def test_json_malformed(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        translator().json_body(body)
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert caught.value.retryable is True
    assert caught.value.message.startswith("The upstream provider sent a malformed answer")


# --- streams ---------------------------------------------------------------------------------------------------

TEXT_STREAM = [
    sse(
        "message_start",
        '{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", '
        '"role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, '
        '"stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}',
    ),
    sse(
        "content_block_start",
        '{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
    ),
    sse("ping", '{"type": "ping"}'),
    sse(
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}',
    ),
    sse(
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}',
    ),
    sse("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
    sse(
        "message_delta",
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, '
        '"usage": {"output_tokens": 15}}',
    ),
    sse("message_stop", '{"type": "message_stop"}'),
]


def test_stream_text() -> None:
    assert feed(translator(chat(stream=True)), TEXT_STREAM) == [
        ChoiceDelta(index=0, content="Hello"),
        ChoiceDelta(index=0, content="!"),
        ChoiceDelta(index=0, finish_reason="stop"),
        Usage(prompt_tokens=25, completion_tokens=15),
    ]


def test_usage_is_not_emitted_by_sse_event() -> None:
    t = translator(chat(stream=True))
    out = [e for event in TEXT_STREAM for e in t.sse_event(event)]
    assert not any(isinstance(e, Usage) for e in out)


def test_stream_tool_call_with_thinking_and_split_arguments() -> None:
    events = [
        sse(
            "message_start",
            '{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
            '"role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,'
            '"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":8,'
            '"output_tokens":2},"content":[],"stop_reason":null}}',
        ),
        sse(
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Weather."}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}',
        ),
        sse("content_block_stop", '{"type":"content_block_stop","index":0}'),
        sse(
            "content_block_start", '{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}'
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Okay, checking."}}',
        ),
        sse("content_block_stop", '{"type":"content_block_stop","index":1}'),
        sse(
            "content_block_start",
            '{"type":"content_block_start","index":2,"content_block":{"type":"tool_use",'
            '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,'
            '"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": "}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\\"San Fra"}}',
        ),
        sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ncisco\\"}"}}',
        ),
        sse("content_block_stop", '{"type":"content_block_stop","index":2}'),
        sse(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}',
        ),
        sse("message_stop", '{"type":"message_stop"}'),
    ]
    assert feed(translator(chat(stream=True)), events) == [
        ChoiceDelta(index=0, content="Okay, checking."),
        call_piece(0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather"),
        call_piece(0, arguments='{"city": '),
        call_piece(0, arguments='"San Fra'),
        call_piece(0, arguments='ncisco"}'),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
        Usage(prompt_tokens=480, completion_tokens=89),
    ]


def test_stream_two_parallel_tool_calls_round_trip_through_the_fake() -> None:
    calls = [
        ToolCall(id="toolu_A", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCall(id="toolu_B", name="get_time", arguments=""),
    ]
    frames = fake.chat_stream(["Two calls."], calls, input_tokens=30, output_tokens=20)
    assert feed(translator(chat(stream=True)), parse_frames(frames)) == [
        ChoiceDelta(index=0, content="Two calls."),
        call_piece(0, id="toolu_A", name="get_weather"),
        call_piece(0, arguments='{"city":'),
        call_piece(0, arguments='"Paris"}'),
        # get_time got no input fragments at all: "{}" closes it so its arguments are valid JSON.
        call_piece(1, id="toolu_B", name="get_time"),
        call_piece(1, arguments="{}"),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
        Usage(prompt_tokens=30, completion_tokens=20),
    ]


def test_fake_stream_frames_exactly_like_anthropic() -> None:
    frames = fake.chat_stream(["Hi"])
    first = frames[0]
    assert isinstance(first, bytes) and first.startswith(b"event: message_start\ndata: {")
    assert frames[1] == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert frames[-1] == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
def test_stream_finish_reasons(stop_reason: str, finish: str) -> None:
    out = feed(translator(chat(stream=True)), parse_frames(fake.chat_stream(["x"], stop_reason=stop_reason)))
    assert out[-2] == ChoiceDelta(index=0, finish_reason=finish)  # type: ignore[arg-type]


def test_stream_message_delta_with_cumulative_input_tokens() -> None:
    events = [
        *TEXT_STREAM[:6],
        sse(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
            '"usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":15}}',
        ),
        TEXT_STREAM[-1],
    ]
    assert feed(translator(chat(stream=True)), events)[-1] == Usage(prompt_tokens=125, completion_tokens=15)


def test_stream_error_event_overloaded_is_retryable() -> None:
    t = translator(chat(stream=True))
    t.sse_event(TEXT_STREAM[0])
    with pytest.raises(GatewayError) as caught:
        t.sse_event(sse("error", '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'))
    assert caught.value.reason is Reason.UPSTREAM_OVERLOADED
    assert caught.value.retryable is True
    assert "Overloaded" in caught.value.message


def test_stream_error_event_invalid_request_is_rejected() -> None:
    with pytest.raises(GatewayError) as caught:
        translator(chat(stream=True)).sse_event(
            sse("error", '{"type":"error","error":{"type":"invalid_request_error","message":"Bad tool schema"}}')
        )
    assert caught.value.reason is Reason.UPSTREAM_REJECTED
    assert caught.value.retryable is False
    assert caught.value.message == "Bad tool schema"


def test_stream_cut_short_raises_at_end() -> None:
    t = translator(chat(stream=True))
    for event in TEXT_STREAM[:5]:
        t.sse_event(event)
    with pytest.raises(GatewayError) as caught:
        t.end()
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert caught.value.retryable is True


def test_stream_without_usage_ends_with_nothing() -> None:
    t = translator(chat(stream=True))
    assert t.sse_event(sse("message_stop", '{"type":"message_stop"}')) == [ChoiceDelta(index=0, finish_reason="stop")]
    assert t.end() == []


@pytest.mark.parametrize(
    "event",
    [
        sse("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_d'),
        sse("content_block_delta", '{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}'),
        sse("message_start", "[1, 2]"),
    ],
)
def test_stream_malformed_event(event: SseEvent) -> None:
    with pytest.raises(GatewayError) as caught:
        translator(chat(stream=True)).sse_event(event)
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert caught.value.retryable is True
    assert caught.value.message.startswith("The upstream provider sent a malformed answer")


def test_unknown_event_types_are_ignored() -> None:
    assert translator().sse_event(sse("future_event", '{"type": "future_event", "x": 1}')) == []


# --- error answers ---------------------------------------------------------------------------------------------


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps(fake.error_json(kind, message))


def test_error_400() -> None:
    error = translator().error(400, {}, error_body("invalid_request_error", "max_tokens: Field required"))
    assert error.reason is Reason.UPSTREAM_REJECTED
    assert error.message == "max_tokens: Field required"
    assert error.retryable is False


@pytest.mark.parametrize(
    "message",
    [
        "prompt is too long: 208310 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length",
    ],
)
def test_error_400_context_length(message: str) -> None:
    error = translator().error(400, {}, error_body("invalid_request_error", message))
    assert error.reason is Reason.CONTEXT_LENGTH_EXCEEDED
    assert error.param == "messages"
    assert error.message == message


def test_error_401() -> None:
    error = translator().error(401, {}, error_body("authentication_error", "invalid x-api-key"))
    assert error.reason is Reason.PROVIDER_ERROR
    assert "invalid x-api-key" not in error.message
    assert error.retryable is False


def test_error_429_with_retry_after() -> None:
    error = translator().error(
        429, {"retry-after": "17", "x-should-retry": "true"}, error_body("rate_limit_error", "Number of request tokens")
    )
    assert error.reason is Reason.UPSTREAM_OVERLOADED
    assert error.retry_after == 17.0
    assert error.retryable is True
    assert "Number of request tokens" in error.message


@pytest.mark.parametrize(
    ("status", "kind", "reason", "message"),
    [
        (500, "api_error", Reason.PROVIDER_ERROR, "The upstream provider failed (500): Overloaded"),
        (529, "overloaded_error", Reason.UPSTREAM_OVERLOADED, "The upstream provider is overloaded: Overloaded"),
    ],
)
def test_error_5xx_is_retryable(status: int, kind: str, reason: Reason, message: str) -> None:
    error = translator().error(status, {}, error_body(kind, "Overloaded"))
    assert error.reason is reason
    assert error.retryable is True
    assert error.message == message


def test_error_non_json_body() -> None:
    error = translator().error(502, {}, b"<html>Bad Gateway</html>")
    assert error.reason is Reason.PROVIDER_ERROR
    assert error.retryable is True
    assert error.message == "The upstream provider failed (502): <html>Bad Gateway</html>"


# --- the fake's default handler ----------------------------------------------------------------------------


def received(body: dict[str, Any], path: str = "/v1/messages") -> Received:
    return Received(method="POST", path=path, query={}, headers={}, body=orjson.dumps(body))


def test_fake_default_answers_what_the_translator_sends() -> None:
    request = chat(user("hello there"), max_tokens=50)
    reply = fake.default(received(orjson.loads(translator(request).request().body)))
    assert isinstance(reply, Json)
    assert translator(request).json_body(orjson.dumps(reply.body))[:2] == [
        ChoiceDelta(index=0, content="Echo: hello there"),
        ChoiceDelta(index=0, finish_reason="stop"),
    ]


def test_fake_default_streams_word_pieces() -> None:
    request = chat(user("hello there"), stream=True)
    reply = fake.default(received(orjson.loads(translator(request).request().body)))
    assert isinstance(reply, Sse)
    out = feed(translator(request), parse_frames(reply.events))
    assert out[:4] == [
        ChoiceDelta(index=0, content="Echo:"),
        ChoiceDelta(index=0, content=" hello"),
        ChoiceDelta(index=0, content=" there"),
        ChoiceDelta(index=0, finish_reason="stop"),
    ]
    assert isinstance(out[-1], Usage) and out[-1].completion_tokens == 3


def test_fake_default_calls_the_first_tool() -> None:
    request = chat(user("use a tool please"), tools=(WEATHER,), stream=True)
    reply = fake.default(received(orjson.loads(translator(request).request().body)))
    assert isinstance(reply, Sse)
    out = feed(translator(request), parse_frames(reply.events))
    assert out[:3] == [
        call_piece(0, id="toolu_01A09q90qw90lq917835lq9", name="get_weather"),
        call_piece(0, arguments="{}"),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]


def test_fake_default_unknown_path_is_404() -> None:
    reply = fake.default(received({"messages": []}, path="/v1/complete"))
    assert isinstance(reply, Json) and reply.status == 404
