"""Tests for the OpenAI Chat Completions translator: literal upstream JSON and SSE in, exact canonical events out."""

from __future__ import annotations

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
from modelway.providers.base import MAX_RETRY_AFTER, SseEvent, Translator, Upstream, retry_after_seconds
from modelway.providers.openai import OpenAITranslator, openai_finish_reason
from tests.fakes import openai as fake
from tests.fakes.server import Json, Received, Sse

UPSTREAM = Upstream(base_url="https://api.openai.com/v1", model="gpt-4o-mini", api_key="sk-test")
WEATHER = FunctionTool(
    name="get_weather",
    description="Current weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    strict=True,
)
PNG = "data:image/png;base64,iVBORw0KGgo="


def user(text: str) -> Message:
    return Message(role="user", content=(TextPart(text),))


def chat(**kwargs: Any) -> ChatRequest:
    fields: dict[str, Any] = {"model": "gpt", "messages": (user("Hi"),), "max_tokens": 100}
    fields.update(kwargs)
    return ChatRequest(**fields)


def translator(request: ChatRequest | None = None, upstream: Upstream = UPSTREAM) -> OpenAITranslator:
    return OpenAITranslator(request or chat(), upstream)


def body_of(request: ChatRequest, upstream: Upstream = UPSTREAM) -> Any:
    return orjson.loads(translator(request, upstream).request().body)


def feed(t: OpenAITranslator, *datas: str) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for data in datas:
        events.extend(t.sse_event(SseEvent(data=data)))
    return events


def test_is_a_translator() -> None:
    t: Translator = translator()
    assert t.request().streaming is False


# --- request --------------------------------------------------------------------------------------------------


def test_request_url_and_headers() -> None:
    upstream = Upstream(base_url="https://api.openai.com/v1", model="gpt-4o", api_key="sk-1", headers={"X-Org": "o"})
    http = translator(chat(stream=True), upstream).request()
    assert http.url == "https://api.openai.com/v1/chat/completions"
    assert http.headers == {"Content-Type": "application/json", "Authorization": "Bearer sk-1", "X-Org": "o"}
    assert http.streaming is True


def test_request_without_api_key_sends_no_authorization() -> None:
    http = translator(upstream=Upstream(base_url="http://localhost:11434/v1", model="llama3")).request()
    assert http.headers == {"Content-Type": "application/json"}
    assert http.url == "http://localhost:11434/v1/chat/completions"


def test_minimal_body_sends_only_what_is_set() -> None:
    assert body_of(chat()) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 100,
    }


def test_rich_request_body() -> None:
    request = chat(
        messages=(
            Message(role="system", content=(TextPart("Be brief."),)),
            Message(role="developer", content=(TextPart("Use metric."),)),
            Message(
                role="user",
                name="ann",
                content=(
                    TextPart("What is in these, and the weather?"),
                    ImagePart(url=PNG, detail="low"),
                    ImagePart(url="https://example.com/cat.jpg"),
                ),
            ),
            Message(
                role="assistant", tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),)
            ),
            Message(role="tool", tool_call_id="call_1", content=(TextPart('{"temp": 3}'),)),
            Message(role="assistant", content=(TextPart("It is 3 degrees."),)),
            user("Thanks"),
        ),
        max_tokens=512,
        temperature=0.2,
        top_p=0.9,
        n=2,
        stop=("END", "\n\n"),
        tools=(WEATHER, FunctionTool(name="noop")),
        tool_choice=ToolChoice(mode="function", function_name="get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat(
            type="json_schema", name="answer", schema={"type": "object", "properties": {}}, strict=True
        ),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100.0},
        logprobs=True,
        top_logprobs=3,
        user="u-42",
        metadata={"team": "a"},
        reasoning_effort="low",
        stream=True,
        extra={"top_k": 40, "service_tier": "flex", "temperature": 1.5},
    )
    assert body_of(request) == {
        "top_k": 40,
        "service_tier": "flex",
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric."},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "What is in these, and the weather?"},
                    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 3 degrees."},
            {"role": "user", "content": "Thanks"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "n": 2,
        "stop": ["END", "\n\n"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100.0},
        "logprobs": True,
        "top_logprobs": 3,
        "user": "u-42",
        "metadata": {"team": "a"},
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {}}, "strict": True},
        },
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }


def test_extra_fields_pass_through_unchanged_but_never_override_canonical_ones() -> None:
    body = body_of(chat(extra={"model": "other", "messages": [], "stream": True, "vendor": {"x": [1, None]}}))
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "vendor": {"x": [1, None]},
        "max_tokens": 100,
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(mode="auto"), None),
        (ToolChoice(mode="none"), "none"),
        (ToolChoice(mode="required"), "required"),
        (
            ToolChoice(mode="function", function_name="get_weather"),
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice(choice: ToolChoice, sent: Any) -> None:
    body = body_of(chat(tools=(WEATHER,), tool_choice=choice))
    assert body.get("tool_choice") == sent
    assert "parallel_tool_calls" not in body


def test_tool_choice_and_parallel_calls_need_tools() -> None:
    body = body_of(chat(tool_choice=ToolChoice(mode="none"), parallel_tool_calls=False))
    assert "tool_choice" not in body and "parallel_tool_calls" not in body and "tools" not in body


@pytest.mark.parametrize(
    ("response_format", "sent"),
    [
        (ResponseFormat(type="text"), None),
        (ResponseFormat(type="json_object"), {"type": "json_object"}),
        (
            ResponseFormat(type="json_schema", schema={"type": "object"}),
            {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}},
        ),
    ],
)
def test_response_format(response_format: ResponseFormat, sent: Any) -> None:
    assert body_of(chat(response_format=response_format)).get("response_format") == sent


def test_message_shapes() -> None:
    messages = (
        Message(role="user", content=(ImagePart(url="https://example.com/a.png"),)),
        Message(role="user", content=(TextPart("a"), TextPart("b"))),
        Message(role="assistant"),
        Message(role="function", name="lookup", content=(TextPart("42"),)),
    )
    assert body_of(chat(messages=messages))["messages"] == [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}}],
        },
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
        {"role": "function", "content": "42", "name": "lookup"},
    ]


# --- whole answers --------------------------------------------------------------------------------------------

TEXT_ANSWER = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
      "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}"""

TOOL_ANSWER = b"""{
  "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916, "model": "gpt-4o-mini",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": "{\\n\\"location\\": \\"Boston, MA\\"\\n}"}
          },
          {"id": "call_def456", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
}"""


def test_json_text_answer() -> None:
    assert translator().json_body(TEXT_ANSWER) == [
        ChoiceDelta(index=0, content="Hello! How can I assist you today?", finish_reason="stop"),
        Usage(prompt_tokens=19, completion_tokens=10),
    ]


def test_json_tool_call_answer() -> None:
    assert translator().json_body(TOOL_ANSWER) == [
        ChoiceDelta(
            index=0,
            tool_calls=(
                ToolCallDelta(
                    index=0, id="call_abc123", name="get_current_weather", arguments='{\n"location": "Boston, MA"\n}'
                ),
                ToolCallDelta(index=1, id="call_def456", name="get_time", arguments="{}"),
            ),
            finish_reason="tool_calls",
        ),
        Usage(prompt_tokens=82, completion_tokens=17),
    ]


def test_json_answer_with_logprobs_and_two_choices_and_no_usage() -> None:
    entry = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    body = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "logprobs": {"content": [entry], "refusal": None},
                "finish_reason": "length",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Yo"},
                "logprobs": None,
                "finish_reason": "content_filter",
            },
        ],
    }
    assert translator().json_body(orjson.dumps(body)) == [
        ChoiceDelta(index=0, content="Hi", finish_reason="length", logprobs=(entry,)),
        ChoiceDelta(index=1, content="Yo", finish_reason="content_filter"),
    ]


def test_json_answer_tolerates_missing_finish_reason_and_call_id() -> None:
    body = {
        "choices": [{"message": {"content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}}]
    }
    [delta] = translator().json_body(orjson.dumps(body))
    assert isinstance(delta, ChoiceDelta)
    assert delta.finish_reason == "tool_calls"
    [call] = delta.tool_calls
    assert call.id.startswith("call_") and len(call.id) > 10
    assert (call.index, call.name, call.arguments) == (0, "f", '{"a":1}')


def test_json_round_trip_through_the_fake() -> None:
    calls = (ToolCall(id="call_9", name="get_weather", arguments='{"city":"Rome"}'),)
    assert translator().json_body(orjson.dumps(fake.chat_json(None, tool_calls=calls, usage=(5, 6)))) == [
        ChoiceDelta(
            index=0,
            tool_calls=(ToolCallDelta(index=0, id="call_9", name="get_weather", arguments='{"city":"Rome"}'),),
            finish_reason="tool_calls",
        ),
        Usage(prompt_tokens=5, completion_tokens=6),
    ]
    assert translator().json_body(orjson.dumps(fake.chat_json("Yes", usage=None, n=2))) == [
        ChoiceDelta(index=0, content="Yes", finish_reason="stop"),
        ChoiceDelta(index=1, content="Yes", finish_reason="stop"),
    ]


def test_json_error_inside_200_body_raises() -> None:
    body = orjson.dumps(fake.error_json("The server had an error processing your request.", "server_error"))
    with pytest.raises(GatewayError) as caught:
        translator().json_body(body)
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"choices": [1]}',
        b'{"choices": [{"message": {"content": 5}}]}',
        b'{"choices": [], "usage": {"prompt_tokens": "x"}}',
        b'{"object": "chat.completion"}',
    ],
)
def test_json_malformed_answer(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        translator().json_body(body)
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable
    assert "malformed" in caught.value.message


# --- streams --------------------------------------------------------------------------------------------------

# The fields OpenAI repeats on every chunk of one completion.
HEAD = (
    '{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    '"system_fingerprint":"fp_44709d6fcb",'
)
TEXT_STREAM = [
    HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
    '"finish_reason":null}],"usage":null}',
    HEAD + '"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}',
    HEAD + '"choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}],"usage":null}',
    HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}',
    HEAD + '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":'
    '{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}',
    "[DONE]",
]


def test_stream_text_answer() -> None:
    t = translator(chat(stream=True))
    assert feed(t, *TEXT_STREAM) == [
        ChoiceDelta(index=0, content="Hello"),
        ChoiceDelta(index=0, content=" there"),
        ChoiceDelta(index=0, finish_reason="stop"),
    ]
    assert t.end() == [Usage(prompt_tokens=9, completion_tokens=2)]


def test_stream_tool_call_arguments_across_events() -> None:
    t = translator(chat(stream=True, tools=(WEATHER,)))
    events = feed(
        t,
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}',
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\""}}]},"logprobs":null,"finish_reason":null}]}',
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"city\\":\\""}}]},"logprobs":null,"finish_reason":null}]}',
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}',
        "[DONE]",
    )
    assert events == [
        ChoiceDelta(
            index=0, tool_calls=(ToolCallDelta(index=0, id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather"),)
        ),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='{"'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='city":"'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='Paris"}'),)),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]
    assert t.end() == []


def test_stream_two_parallel_tool_calls_through_the_fake() -> None:
    calls = (
        ToolCall(id="call_a", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city":"Lima"}'),
    )
    t = translator(chat(stream=True, tools=(WEATHER,)))
    events = feed(t, *fake.chat_stream((), tool_calls=calls, usage=(20, 18)))
    assert events == [
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, id="call_a", name="get_weather"),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='{"city":'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='"Oslo"}'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, id="call_b", name="get_weather"),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, arguments='{"city":'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, arguments='"Lima"}'),)),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]
    assert t.end() == [Usage(prompt_tokens=20, completion_tokens=18)]


def test_stream_text_round_trip_through_the_fake_with_two_choices() -> None:
    t = translator(chat(stream=True, n=2))
    assert feed(t, *fake.chat_stream(["Hi", "!"], n=2, usage=(3, 4))) == [
        ChoiceDelta(index=0, content="Hi"),
        ChoiceDelta(index=1, content="Hi"),
        ChoiceDelta(index=0, content="!"),
        ChoiceDelta(index=1, content="!"),
        ChoiceDelta(index=0, finish_reason="stop"),
        ChoiceDelta(index=1, finish_reason="stop"),
    ]
    assert t.end() == [Usage(prompt_tokens=3, completion_tokens=4)]


def test_stream_repeated_ids_and_missing_indexes_are_normalised() -> None:
    # Some servers repeat id and name on every fragment; Gemini's compatibility layer omits `index`.
    t = translator(chat(stream=True))
    events = feed(
        t,
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c2","type":"function","function":{"name":"g","arguments":"{\\"a\\""}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":"tool_calls"}]}',
    )
    assert events == [
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, id="c1", name="f", arguments="{}"),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, id="c2", name="g", arguments='{"a"'),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, arguments=":1}"),)),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]
    assert t.end() == []  # every choice finished, even without [DONE]


def test_stream_logprobs_and_usage_on_every_chunk() -> None:
    entry = {
        "token": "Hi",
        "logprob": -0.01,
        "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.01, "bytes": [72, 105]}],
    }
    t = translator(chat(stream=True, logprobs=True))
    events = feed(
        t,
        orjson.dumps(
            {
                "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [entry]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        ).decode(),
        orjson.dumps(
            {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            }
        ).decode(),
        "[DONE]",
        '{"choices":[{"index":0,"delta":{"content":"late"}}]}',
    )
    assert events == [
        ChoiceDelta(index=0, content="Hi", logprobs=(entry,)),
        ChoiceDelta(index=0, finish_reason="length"),
    ]
    assert t.end() == [Usage(prompt_tokens=5, completion_tokens=2)]


@pytest.mark.parametrize(
    ("upstream", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("model_length", "length"),
        ("eos", "stop"),
        ("something_new", "stop"),
    ],
)
def test_finish_reason_mapping(upstream: str, ours: str) -> None:
    assert openai_finish_reason(upstream) == ours
    t = translator(chat(stream=True))
    data = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": upstream}]}).decode()
    assert feed(t, data) == [ChoiceDelta(index=0, finish_reason=ours)]


def test_stream_error_event_raises() -> None:
    t = translator(chat(stream=True))
    feed(t, *TEXT_STREAM[:2])
    error = orjson.dumps(fake.error_json("The server is overloaded.", "server_error")).decode()
    with pytest.raises(GatewayError) as caught:
        feed(t, error)
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable
    assert "The server is overloaded." in caught.value.message


def test_stream_error_of_the_callers_making_is_not_retried() -> None:
    t = translator(chat(stream=True))
    with pytest.raises(GatewayError) as caught:
        feed(t, orjson.dumps(fake.error_json("Invalid 'messages'.", param="messages")).decode())
    assert caught.value.reason is Reason.UPSTREAM_REJECTED and not caught.value.retryable


VLLM_ERROR = (
    '{"object":"error","message":"This model\'s maximum context length is 4096 tokens.",'
    '"type":"BadRequestError","param":null,"code":400}'
)


def test_stream_error_shapes_of_openrouter_and_vllm() -> None:
    openrouter = (
        '{"id":"gen-1","object":"chat.completion.chunk","error":{"code":502,"message":"Provider disconnected"},'
        '"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}'
    )
    with pytest.raises(GatewayError) as caught:
        feed(translator(chat(stream=True)), openrouter)
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable
    vllm = VLLM_ERROR
    with pytest.raises(GatewayError) as caught:
        feed(translator(chat(stream=True)), vllm)
    assert caught.value.reason is Reason.CONTEXT_LENGTH_EXCEEDED and caught.value.param == "messages"


def test_truncated_stream_raises_at_end() -> None:
    t = translator(chat(stream=True))
    feed(t, *TEXT_STREAM[:3])
    with pytest.raises(GatewayError) as caught:
        t.end()
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable


def test_stream_with_one_of_two_choices_finished_is_truncated() -> None:
    t = translator(chat(stream=True, n=2))
    feed(t, *fake.chat_stream(["Hi"], n=2, done=False, include_usage=False)[:-1])
    with pytest.raises(GatewayError):
        t.end()


def test_stream_ended_by_done_without_usage() -> None:
    t = translator(chat(stream=True))
    assert feed(t, *fake.chat_stream(["Hi"], include_usage=False)) == [
        ChoiceDelta(index=0, content="Hi"),
        ChoiceDelta(index=0, finish_reason="stop"),
    ]
    assert t.end() == []


@pytest.mark.parametrize(
    "data", ["{not json", "[]", '{"choices":[{"index":"0","delta":{}}]}', '{"choices":[{"delta":{"content":5}}]}']
)
def test_stream_malformed_event(data: str) -> None:
    with pytest.raises(GatewayError) as caught:
        feed(translator(chat(stream=True)), data)
    assert caught.value.reason is Reason.PROVIDER_ERROR and caught.value.retryable
    assert "malformed" in caught.value.message


# --- error answers --------------------------------------------------------------------------------------------


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None) -> bytes:
    return orjson.dumps(fake.error_json(message, type, code=code))


def test_error_400() -> None:
    error = translator().error(400, {}, error_body("Invalid value for 'temperature'."))
    assert error.reason is Reason.UPSTREAM_REJECTED
    assert error.message == "Invalid value for 'temperature'."
    assert not error.retryable


@pytest.mark.parametrize(
    "body",
    [
        error_body("Input too long.", code="context_length_exceeded"),
        error_body(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens."
        ),
        VLLM_ERROR.encode(),
    ],
)
def test_error_400_context_length(body: bytes) -> None:
    error = translator().error(400, {}, body)
    assert error.reason is Reason.CONTEXT_LENGTH_EXCEEDED and error.param == "messages"


def test_error_401_hides_the_upstream_words() -> None:
    error = translator().error(401, {}, error_body("Incorrect API key provided: sk-test.", code="invalid_api_key"))
    assert error.reason is Reason.PROVIDER_ERROR
    assert "sk-test" not in error.message


def test_error_429_with_retry_after() -> None:
    body = error_body("Rate limit reached for gpt-4o-mini.", "requests", code="rate_limit_exceeded")
    error = translator().error(429, {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}, body)
    assert error.reason is Reason.UPSTREAM_OVERLOADED
    assert error.retry_after == 7.0 and error.retryable
    assert "Rate limit reached for gpt-4o-mini." in error.message


@pytest.mark.parametrize("status", [500, 503, 529])
def test_error_5xx_is_retryable(status: int) -> None:
    error = translator().error(
        status, {}, error_body("The server had an error while processing your request.", "server_error")
    )
    assert error.reason is (Reason.UPSTREAM_OVERLOADED if status == 529 else Reason.PROVIDER_ERROR)
    assert error.retryable
    assert "The server had an error while processing your request." in error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
        (b'{"error": "model \\"llama9\\" not found"}', 'model "llama9" not found'),
        (b'[{"error": {"code": 400, "message": "Bad schema", "status": "INVALID_ARGUMENT"}}]', "Bad schema"),
        (b"", "HTTP 400"),
    ],
)
def test_error_bodies_of_other_shapes(body: bytes, message: str) -> None:
    error = translator().error(400, {}, body)
    assert error.reason is Reason.UPSTREAM_REJECTED and error.message == message


# --- the fake's default handler -------------------------------------------------------------------------------


def received(body: Any, method: str = "POST", path: str = "/v1/chat/completions") -> Received:
    return Received(method=method, path=path, query={}, headers={}, body=orjson.dumps(body))


def test_fake_default_answers_models_and_json() -> None:
    assert fake.default(received(None, "GET", "/v1/models")) == Json(fake.models_json())
    reply = fake.default(received({"model": "m", "messages": [{"role": "user", "content": "hi there"}]}))
    assert isinstance(reply, Json)
    events = translator().json_body(orjson.dumps(reply.body))
    assert events[0] == ChoiceDelta(index=0, content="Echo: hi there", finish_reason="stop")
    assert isinstance(events[1], Usage) and events[1].completion_tokens == 3


def test_fake_default_streams_a_tool_call() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "use a tool"}],
        "tools": tools,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reply = fake.default(received(body))
    assert isinstance(reply, Sse)
    t = translator(chat(stream=True))
    events = [*feed(t, *(str(e) for e in reply.events)), *t.end()]
    assert events[0] == ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, id="call_fake0", name="get_weather"),))
    assert events[1:3] == [
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments="{}"),)),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]
    assert isinstance(events[3], Usage)
    assert fake.sse_bytes(["[DONE]"]) == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("model", "field", "absent"),
    [
        ("o3-mini", "max_completion_tokens", "max_tokens"),
        ("openai/gpt-5", "max_completion_tokens", "max_tokens"),
        ("gpt-4o", "max_tokens", "max_completion_tokens"),
    ],
)
def test_reasoning_models_get_max_completion_tokens(model: str, field: str, absent: str) -> None:
    request = ChatRequest(model="m", messages=(Message(role="user", content=(TextPart("hi"),)),), max_tokens=50)
    body = orjson.loads(OpenAITranslator(request, Upstream("http://u/v1", model)).request().body)
    assert body[field] == 50
    assert absent not in body


def test_exhausted_billing_is_the_operators_problem_not_a_rate_limit() -> None:
    body = orjson.dumps(
        fake.error_json(
            "You exceeded your current quota, please check your plan.", "insufficient_quota", code="insufficient_quota"
        )
    )
    error = OpenAITranslator(ChatRequest(model="m", messages=(user("hi"),)), Upstream("http://u/v1", "gpt")).error(
        429, {"retry-after": "1"}, body
    )
    assert (error.reason, error.retryable, error.retry_after) == (Reason.PROVIDER_ERROR, False, None)
    assert "quota" not in error.message


def test_credential_error_inside_a_stream_hides_the_upstreams_words() -> None:
    translator = OpenAITranslator(
        ChatRequest(model="m", messages=(user("hi"),), stream=True), Upstream("http://u/v1", "gpt")
    )
    event = orjson.dumps(
        {
            "error": {
                "message": "Incorrect API key: sk-ab***cd",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
    ).decode()
    with pytest.raises(GatewayError) as caught:
        translator.sse_event(SseEvent(event))
    assert caught.value.reason is Reason.PROVIDER_ERROR and not caught.value.retryable
    assert "sk-" not in caught.value.message


@pytest.mark.parametrize("value", ["inf", "1e999", "nan", "-inf"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(value: str) -> None:
    assert retry_after_seconds({"Retry-After": value}) is None


def test_a_huge_retry_after_is_capped_and_its_header_stays_a_number() -> None:
    assert retry_after_seconds({"retry-after": "99999999"}) == MAX_RETRY_AFTER
    assert GatewayError(Reason.UPSTREAM_OVERLOADED, "x", retry_after=float("inf")).retry_after_header is None
