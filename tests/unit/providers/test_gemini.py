"""Tests for the Gemini translator: literal requests and documented-shape answers in, exact outputs out."""

from __future__ import annotations

import hashlib
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
from modelway.providers.base import SseEvent, Upstream
from modelway.providers.gemini import GeminiTranslator, gemini_model_path
from modelway.providers.sse import SseDecoder
from tests.fakes import gemini as fake
from tests.fakes.server import Json, Received, Sse

UPSTREAM = Upstream(
    base_url="https://generativelanguage.googleapis.com",
    model="gemini-2.5-flash",
    api_key="AIza-secret",
    headers={"x-extra": "1"},
)
WEATHER = FunctionTool(
    name="get_weather",
    description="Current weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
CLOCK = FunctionTool(name="get_time")
SKIP = "skip_thought_signature_validator"


def user(text: str) -> Message:
    return Message(role="user", content=(TextPart(text),))


def simple(**changes: Any) -> ChatRequest:
    fields: dict[str, Any] = {"model": "g", "messages": (user("Hi"),), "max_tokens": 100}
    fields.update(changes)
    return ChatRequest(**fields)


def translator(request: ChatRequest | None = None, upstream: Upstream = UPSTREAM) -> GeminiTranslator:
    return GeminiTranslator(request or simple(), upstream)


def body_of(request: ChatRequest) -> Any:
    return orjson.loads(translator(request).request().body)


def sse(payload: str) -> SseEvent:
    return SseEvent(data=payload)


def call_id(response_id: str, candidate: int, position: int, name: str) -> str:
    return "call_" + hashlib.sha256(f"{response_id}|{candidate}|{position}|{name}".encode()).hexdigest()[:24]


def raises(call: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call(*args)
    return caught.value


# --- request -----------------------------------------------------------------------------------------------


def test_request_url_headers_and_streaming_flag() -> None:
    plain = translator().request()
    assert plain.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert dict(plain.headers) == {"x-goog-api-key": "AIza-secret", "content-type": "application/json", "x-extra": "1"}
    assert plain.streaming is False
    streamed = translator(simple(stream=True)).request()
    assert streamed.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert streamed.streaming is True


def test_model_path_strips_prefix_keeps_tuned_names_and_escapes() -> None:
    assert gemini_model_path("models/gemini-2.5-pro") == "models/gemini-2.5-pro"
    assert gemini_model_path("tunedModels/my-model") == "tunedModels/my-model"
    assert gemini_model_path("gemini exp?1") == "models/gemini%20exp%3F1"
    versioned = Upstream(base_url="https://proxy.example/v1beta/", model="models/gemini-2.5-pro")
    assert translator(upstream=versioned).request().url == (
        "https://proxy.example/v1beta/models/gemini-2.5-pro:generateContent"
    )


def test_rich_request_body() -> None:
    request = ChatRequest(
        model="g",
        messages=(
            Message(role="system", content=(TextPart("Be brief."),)),
            Message(role="developer", content=(TextPart("Use metric units."),)),
            Message(
                role="user",
                content=(
                    TextPart("What is in these, and the weather?"),
                    ImagePart(url="data:image/png;base64,iVBORw0KGgo="),
                    ImagePart(url="https://example.com/photos/cat.webp?size=large"),
                    ImagePart(url="https://example.com/photo"),
                ),
            ),
            Message(
                role="assistant",
                content=(TextPart("Let me check."),),
                tool_calls=(
                    ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
                    ToolCall(id="call_2", name="get_time", arguments=""),
                ),
            ),
            Message(role="tool", content=(TextPart('{"temp": 21}'),), tool_call_id="call_1"),
            Message(role="tool", content=(TextPart("12:00"),), tool_call_id="call_2"),
            Message(role="assistant", content=(TextPart("21 degrees at noon."),)),
            user("Thanks"),
            user("And tomorrow?"),
        ),
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        n=2,
        stop=("END", "STOP"),
        tools=(WEATHER, CLOCK),
        tool_choice=ToolChoice(mode="function", function_name="get_weather"),
        response_format=ResponseFormat(
            type="json_schema", name="answer", schema={"type": "object", "properties": {"a": {"type": "string"}}}
        ),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logprobs=True,
        top_logprobs=3,
    )
    assert body_of(request) == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What is in these, and the weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {
                        "fileData": {
                            "mimeType": "image/webp",
                            "fileUri": "https://example.com/photos/cat.webp?size=large",
                        }
                    },
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SKIP},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
                ],
            },
            {"role": "model", "parts": [{"text": "21 degrees at noon."}]},
            {"role": "user", "parts": [{"text": "Thanks"}, {"text": "And tomorrow?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather",
                        "parametersJsonSchema": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                            "additionalProperties": False,
                        },
                    },
                    {"name": "get_time"},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 256,
            "stopSequences": ["END", "STOP"],
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "responseLogprobs": True,
            "logprobs": 3,
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }


def test_minimal_body_has_only_what_was_asked() -> None:
    assert body_of(simple()) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"maxOutputTokens": 100},
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (ToolChoice(mode="auto"), {"mode": "AUTO"}),
        (ToolChoice(mode="none"), {"mode": "NONE"}),
        (ToolChoice(mode="required"), {"mode": "ANY"}),
    ],
)
def test_tool_choice_modes(choice: ToolChoice, config: dict[str, Any]) -> None:
    assert body_of(simple(tools=(WEATHER,), tool_choice=choice))["toolConfig"] == {"functionCallingConfig": config}


def test_json_object_and_reasoning_effort() -> None:
    config = body_of(simple(response_format=ResponseFormat(type="json_object"), reasoning_effort="low"))
    assert config["generationConfig"] == {
        "maxOutputTokens": 100,
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 1024},
    }


def test_tool_result_name_falls_back_to_message_name_and_non_object_json_is_wrapped() -> None:
    request = simple(
        messages=(
            user("go"),
            Message(role="tool", content=(TextPart("[1, 2]"),), tool_call_id="unknown", name="lookup"),
        )
    )
    # A tool result is a user turn, so it joins the user text before it.
    assert body_of(request)["contents"] == [
        {
            "role": "user",
            "parts": [{"text": "go"}, {"functionResponse": {"name": "lookup", "response": {"result": "[1, 2]"}}}],
        }
    ]


def test_percent_encoded_data_url_is_base64_encoded() -> None:
    request = simple(messages=(Message(role="user", content=(ImagePart(url="data:image/svg+xml,%3Csvg%3E"),)),))
    assert body_of(request)["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/svg+xml", "data": "PHN2Zz4="}}
    ]


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"logit_bias": {"50256": -100.0}}, "logit_bias"),
        ({"messages": (Message(role="tool", content=(TextPart("x"),), tool_call_id="nope"),)}, "messages"),
        (
            {
                "messages": (
                    user("go"),
                    Message(role="assistant", tool_calls=(ToolCall(id="c", name="f", arguments="[1]"),)),
                )
            },
            "messages",
        ),
        ({"messages": (Message(role="user", content=(ImagePart(url="ftp://x/y.png"),)),)}, "messages"),
        ({"messages": (Message(role="user", content=(ImagePart(url="data:image/png;base64,@@@"),)),)}, "messages"),
        ({"messages": (Message(role="system", content=(TextPart("only system"),)),)}, "messages"),
        ({"tool_choice": ToolChoice(mode="required")}, "tool_choice"),
        ({"tools": (WEATHER,), "tool_choice": ToolChoice(mode="function", function_name="nope")}, "tool_choice"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_inexpressible_requests_are_invalid_values(changes: dict[str, Any], param: str) -> None:
    error = raises(GeminiTranslator, simple(**changes), UPSTREAM)
    assert (error.reason, error.param) == (Reason.INVALID_VALUE, param)


# --- non-streamed answers ------------------------------------------------------------------------------------


def test_json_text_answer_with_usage_skips_thoughts() -> None:
    body = b"""{
      "candidates": [{
        "content": {"parts": [{"text": "Thinking about it", "thought": true}, {"text": "Hello"}, {"text": " there"}],
                    "role": "model"},
        "finishReason": "STOP",
        "index": 0
      }],
      "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
                        "totalTokenCount": 15},
      "modelVersion": "gemini-2.5-flash",
      "responseId": "abc"
    }"""
    assert translator().json_body(body) == [
        ChoiceDelta(index=0, content="Hello there", finish_reason="stop"),
        Usage(prompt_tokens=8, completion_tokens=7),
    ]


def test_json_tool_calls_get_upstream_or_derived_ids() -> None:
    body = orjson.dumps(
        fake.chat_json(
            "Checking.",
            function_calls=[
                fake.function_call("get_weather", {"city": "Paris"}),
                fake.function_call("get_time", id="fc-42"),
            ],
            prompt_tokens=20,
            completion_tokens=9,
            response_id="resp-1",
        )
    )
    assert translator().json_body(body) == [
        ChoiceDelta(
            index=0,
            content="Checking.",
            tool_calls=(
                ToolCallDelta(
                    index=0, id=call_id("resp-1", 0, 0, "get_weather"), name="get_weather", arguments='{"city":"Paris"}'
                ),
                ToolCallDelta(index=1, id="fc-42", name="get_time", arguments="{}"),
            ),
            finish_reason="tool_calls",
        ),
        Usage(prompt_tokens=20, completion_tokens=9),
    ]


def test_json_several_candidates_without_index_and_logprobs() -> None:
    body = b"""{
      "candidates": [
        {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "MAX_TOKENS",
         "logprobsResult": {
           "topCandidates": [{"candidates": [{"token": "A", "tokenId": 1, "logProbability": -0.1},
                                             {"token": "B", "tokenId": 2, "logProbability": -2.5}]}],
           "chosenCandidates": [{"token": "A", "tokenId": 1, "logProbability": -0.1}]}},
        {"finishReason": "SAFETY", "index": 1}
      ]
    }"""
    assert translator().json_body(body) == [
        ChoiceDelta(
            index=0,
            content="A",
            finish_reason="length",
            logprobs=(
                {
                    "token": "A",
                    "logprob": -0.1,
                    "bytes": [65],
                    "top_logprobs": [
                        {"token": "A", "logprob": -0.1, "bytes": [65]},
                        {"token": "B", "logprob": -2.5, "bytes": [66]},
                    ],
                },
            ),
        ),
        ChoiceDelta(index=1, finish_reason="content_filter"),
    ]


@pytest.mark.parametrize(
    ("raw", "made_calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
        ("LANGUAGE", False, "stop"),
    ],
)
def test_finish_reason_mapping(raw: str, made_calls: bool, expected: str) -> None:
    calls = [fake.function_call("f", id="c1")] if made_calls else []
    events = translator().json_body(orjson.dumps(fake.chat_json(function_calls=calls, finish_reason=raw)))
    first = events[0]
    assert isinstance(first, ChoiceDelta)
    assert first.finish_reason == expected


def test_blocked_prompt_is_rejected() -> None:
    body = (
        b'{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "usageMetadata": {"promptTokenCount": 4}}'
    )
    error = raises(translator().json_body, body)
    assert error.reason == Reason.UPSTREAM_REJECTED
    assert "SAFETY" in error.message
    assert error.retryable is False


def test_error_inside_a_200_body() -> None:
    body = orjson.dumps(fake.error_json(503, "The model is overloaded.", "UNAVAILABLE"))
    error = raises(translator().json_body, body)
    assert (error.reason, error.retryable) == (Reason.PROVIDER_ERROR, True)


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"candidates": "nope"}', b'{"candidates": [{"content": {"parts": [7]}}]}', b"[1]"],
)
def test_malformed_json_body(body: bytes) -> None:
    error = raises(translator().json_body, body)
    assert error.reason == Reason.PROVIDER_ERROR
    assert error.retryable is True
    assert error.message.startswith("The upstream provider sent a malformed answer")


def test_empty_answer_without_candidates_is_a_provider_error() -> None:
    error = raises(translator().json_body, b'{"usageMetadata": {"promptTokenCount": 3}}')
    assert (error.reason, error.retryable) == (Reason.PROVIDER_ERROR, True)


def test_array_framed_stream_as_one_body() -> None:
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}]},
        {
            "candidates": [{"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2},
        },
    ]
    assert translator().json_body(orjson.dumps(chunks)) == [
        ChoiceDelta(index=0, content="Hi"),
        ChoiceDelta(index=0, content="!", finish_reason="stop"),
        Usage(prompt_tokens=2, completion_tokens=2),
    ]


# --- streamed answers ----------------------------------------------------------------------------------------


def run_stream(t: GeminiTranslator, events: list[SseEvent]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for event in events:
        out.extend(t.sse_event(event))
    out.extend(t.end())
    return out


def test_streamed_text_answer() -> None:
    events = [
        sse(
            '{"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],'
            '"usageMetadata": {"promptTokenCount": 6,"totalTokenCount": 6},"modelVersion": "gemini-2.5-flash",'
            '"responseId": "r1"}'
        ),
        sse(
            '{"candidates": [{"content": {"parts": [{"text": " sky is"}],"role": "model"},"index": 0}],'
            '"usageMetadata": {"promptTokenCount": 6,"totalTokenCount": 6},"modelVersion": "gemini-2.5-flash",'
            '"responseId": "r1"}'
        ),
        sse(
            '{"candidates": [{"content": {"parts": [{"text": " blue."}],"role": "model"},"finishReason": "STOP",'
            '"index": 0}],"usageMetadata": {"promptTokenCount": 6,"candidatesTokenCount": 4,"totalTokenCount": 10},'
            '"modelVersion": "gemini-2.5-flash","responseId": "r1"}'
        ),
    ]
    t = translator(simple(stream=True))
    assert t.sse_event(events[0]) == [ChoiceDelta(index=0, content="The")]
    assert t.sse_event(events[1]) == [ChoiceDelta(index=0, content=" sky is")]
    assert t.sse_event(events[2]) == [ChoiceDelta(index=0, content=" blue.", finish_reason="stop")]
    assert t.end() == [Usage(prompt_tokens=6, completion_tokens=4)]


def test_streamed_tool_call_after_text_and_separate_finish() -> None:
    events = [
        sse('{"candidates": [{"content": {"parts": [{"text": "Let me look."}], "role": "model"}, "index": 0}]}'),
        sse(
            '{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", '
            '"args": {"city": "Paris", "days": 2}}, "thoughtSignature": "c2ln"}], "role": "model"}, "index": 0}],'
            ' "responseId": "r2"}'
        ),
        sse(
            '{"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP",'
            ' "index": 0}], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 12}, "responseId": "r2"}'
        ),
    ]
    assert run_stream(translator(simple(stream=True)), events) == [
        ChoiceDelta(index=0, content="Let me look."),
        ChoiceDelta(
            index=0,
            tool_calls=(
                ToolCallDelta(
                    index=0,
                    id=call_id("r2", 0, 0, "get_weather"),
                    name="get_weather",
                    arguments='{"city":"Paris","days":2}',
                ),
            ),
        ),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
        Usage(prompt_tokens=30, completion_tokens=12),
    ]


def test_two_parallel_tool_calls_in_one_stream() -> None:
    events = [
        sse(
            '{"candidates": [{"content": {"parts": ['
            '{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},'
            ' {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}], "role": "model"},'
            ' "finishReason": "STOP", "index": 0}],'
            ' "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 10}, "responseId": "r3"}'
        ),
    ]
    assert run_stream(translator(simple(stream=True)), events) == [
        ChoiceDelta(
            index=0,
            tool_calls=(
                ToolCallDelta(
                    index=0, id=call_id("r3", 0, 0, "get_weather"), name="get_weather", arguments='{"city":"Oslo"}'
                ),
                ToolCallDelta(
                    index=1, id=call_id("r3", 0, 1, "get_weather"), name="get_weather", arguments='{"city":"Rome"}'
                ),
            ),
            finish_reason="tool_calls",
        ),
        Usage(prompt_tokens=9, completion_tokens=10),
    ]


def test_tool_calls_across_chunks_keep_counting_indexes() -> None:
    events = [
        sse('{"candidates": [{"content": {"parts": [{"functionCall": {"name": "a", "id": "x1"}}]}}]}'),
        sse('{"candidates": [{"content": {"parts": [{"functionCall": {"name": "b", "id": "x2"}}]}}]}'),
        sse('{"candidates": [{"finishReason": "STOP"}]}'),
    ]
    assert run_stream(translator(simple(stream=True)), events) == [
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, id="x1", name="a", arguments="{}"),)),
        ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, id="x2", name="b", arguments="{}"),)),
        ChoiceDelta(index=0, finish_reason="tool_calls"),
    ]


def test_stream_of_two_candidates_needs_both_finished() -> None:
    t = translator(simple(stream=True, n=2))
    assert t.sse_event(
        sse(
            '{"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0},'
            ' {"content": {"parts": [{"text": "b"}]}, "index": 1}]}'
        )
    ) == [ChoiceDelta(index=0, content="a"), ChoiceDelta(index=1, content="b")]
    assert t.sse_event(sse('{"candidates": [{"finishReason": "STOP", "index": 0}]}')) == [
        ChoiceDelta(index=0, finish_reason="stop")
    ]
    assert raises(t.end).reason == Reason.PROVIDER_ERROR
    assert t.sse_event(sse('{"candidates": [{"finishReason": "MAX_TOKENS", "index": 1}]}')) == [
        ChoiceDelta(index=1, finish_reason="length")
    ]
    assert t.end() == []


def test_truncated_stream_raises_at_end() -> None:
    t = translator(simple(stream=True))
    t.sse_event(sse('{"candidates": [{"content": {"parts": [{"text": "Half"}]}, "index": 0}]}'))
    error = raises(t.end)
    assert (error.reason, error.retryable) == (Reason.PROVIDER_ERROR, True)
    assert raises(translator(simple(stream=True)).end).retryable is True


@pytest.mark.parametrize(
    ("payload", "reason", "retryable"),
    [
        ('{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}', "p", True),
        ('{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}', "p", True),
        ('{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}', "p", True),
        ('{"error": {"code": 400, "message": "Bad schema", "status": "INVALID_ARGUMENT"}}', "r", False),
        (
            '{"error": {"code": 400, "message": "The input token count (2000000) exceeds the maximum number of tokens'
            ' allowed (1048576).", "status": "INVALID_ARGUMENT"}}',
            "c",
            False,
        ),
    ],
)
def test_error_event_in_stream(payload: str, reason: str, retryable: bool) -> None:
    expected = {"p": Reason.PROVIDER_ERROR, "r": Reason.UPSTREAM_REJECTED, "c": Reason.CONTEXT_LENGTH_EXCEEDED}
    t = translator(simple(stream=True))
    t.sse_event(sse('{"candidates": [{"content": {"parts": [{"text": "So"}]}, "index": 0}]}'))
    error = raises(t.sse_event, sse(payload))
    assert (error.reason, error.retryable) == (expected[reason], retryable)


def test_blocked_prompt_in_stream() -> None:
    error = raises(translator(simple(stream=True)).sse_event, sse('{"promptFeedback": {"blockReason": "OTHER"}}'))
    assert error.reason == Reason.UPSTREAM_REJECTED


def test_malformed_stream_event() -> None:
    error = raises(translator(simple(stream=True)).sse_event, sse('{"candidates": [{"content": '))
    assert (error.reason, error.retryable) == (Reason.PROVIDER_ERROR, True)


# --- HTTP errors ---------------------------------------------------------------------------------------------


def error_body(code: int, message: str, status: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return orjson.dumps(fake.error_json(code, message, status, details or []))


def test_error_400_invalid_argument() -> None:
    error = translator().error(400, {}, error_body(400, "Invalid value at 'contents'", "INVALID_ARGUMENT"))
    assert (error.reason, error.message, error.retryable) == (
        Reason.UPSTREAM_REJECTED,
        "Invalid value at 'contents'",
        False,
    )


def test_error_400_context_length() -> None:
    message = "The input token count (1500000) exceeds the maximum number of tokens allowed (1048576)."
    error = translator().error(400, {}, error_body(400, message, "INVALID_ARGUMENT"))
    assert (error.reason, error.param) == (Reason.CONTEXT_LENGTH_EXCEEDED, "messages")


def test_error_bad_api_key_is_a_credentials_problem() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    body = error_body(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", details)
    error = translator().error(400, {}, body)
    assert error.reason == Reason.PROVIDER_ERROR
    assert "credentials" in error.message and "API key" not in error.message


def test_error_401_and_403() -> None:
    for status in (401, 403):
        error = translator().error(status, {}, error_body(status, "denied", "PERMISSION_DENIED"))
        assert error.reason == Reason.PROVIDER_ERROR
        assert error.message == f"The upstream provider refused the gateway's credentials or account ({status})."


def test_error_429_with_retry_after_header() -> None:
    body = error_body(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
    error = translator().error(429, {"Retry-After": "7"}, body)
    assert (error.reason, error.retry_after, error.retryable) == (Reason.UPSTREAM_OVERLOADED, 7.0, True)
    assert "Resource has been exhausted" in error.message


def test_error_429_with_retry_info_detail() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "33s"}]
    error = translator().error(429, {}, error_body(429, "Quota exceeded", "RESOURCE_EXHAUSTED", details))
    assert (error.retry_after, error.retryable) == (33.0, True)


@pytest.mark.parametrize("status", [500, 503, 529])
def test_error_server_side(status: int) -> None:
    error = translator().error(status, {}, error_body(status, "The model is overloaded.", "UNAVAILABLE"))
    expected = Reason.UPSTREAM_OVERLOADED if status == 529 else Reason.PROVIDER_ERROR
    assert (error.reason, error.retryable) == (expected, True)
    assert "The model is overloaded." in error.message


def test_error_non_json_body_and_array_body() -> None:
    error = translator().error(502, {}, b"<html>Bad Gateway</html>")
    assert (error.reason, error.retryable) == (Reason.PROVIDER_ERROR, True)
    assert "Bad Gateway" in error.message
    array = b'[{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}]'
    assert translator().error(400, {}, array).message == "bad"


# --- round trips through the fake ----------------------------------------------------------------------------


def frames_to_events(frames: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for frame in frames for event in decoder.feed(frame)]
    return events + decoder.close()


def test_round_trip_fake_json_text() -> None:
    body = orjson.dumps(fake.chat_json("Echo: hi", prompt_tokens=3, completion_tokens=2))
    assert translator().json_body(body) == [
        ChoiceDelta(index=0, content="Echo: hi", finish_reason="stop"),
        Usage(prompt_tokens=3, completion_tokens=2),
    ]


def test_round_trip_fake_stream_text() -> None:
    frames = fake.chat_stream(["Echo: ", "hi ", "there"], prompt_tokens=4)
    assert all(frame.endswith(b"\r\n\r\n") for frame in frames)
    assert run_stream(translator(simple(stream=True)), frames_to_events(frames)) == [
        ChoiceDelta(index=0, content="Echo: "),
        ChoiceDelta(index=0, content="hi "),
        ChoiceDelta(index=0, content="there", finish_reason="stop"),
        Usage(prompt_tokens=4, completion_tokens=3),
    ]


def test_round_trip_fake_stream_tool_call() -> None:
    frames = fake.chat_stream([], function_calls=[fake.function_call("get_weather", {"city": "Lima"})])
    assert run_stream(translator(simple(stream=True)), frames_to_events(frames)) == [
        ChoiceDelta(
            index=0,
            tool_calls=(
                ToolCallDelta(
                    index=0,
                    id=call_id(fake.RESPONSE_ID, 0, 0, "get_weather"),
                    name="get_weather",
                    arguments='{"city":"Lima"}',
                ),
            ),
            finish_reason="tool_calls",
        ),
        Usage(prompt_tokens=10, completion_tokens=1),
    ]


def received(request: ChatRequest, method: str = "POST") -> Received:
    http = translator(request).request()
    path = "/" + http.url.split("/", 3)[3].split("?")[0]
    return Received(method=method, path=path, query={}, headers=dict(http.headers), body=http.body)


def test_fake_default_handler_answers_in_the_wire_format() -> None:
    reply = fake.default(received(simple(messages=(user("hello world"),))))
    assert isinstance(reply, Json)
    assert translator().json_body(orjson.dumps(reply.body)) == [
        ChoiceDelta(index=0, content="Echo: hello world", finish_reason="stop"),
        Usage(prompt_tokens=2, completion_tokens=3),
    ]
    streamed = fake.default(received(simple(messages=(user("hello world"),), stream=True)))
    assert isinstance(streamed, Sse)
    frames = [frame for frame in streamed.events if isinstance(frame, bytes)]
    assert run_stream(translator(simple(stream=True)), frames_to_events(frames)) == [
        ChoiceDelta(index=0, content="Echo: "),
        ChoiceDelta(index=0, content="hello "),
        ChoiceDelta(index=0, content="world", finish_reason="stop"),
        Usage(prompt_tokens=2, completion_tokens=3),
    ]
    tool_request = simple(messages=(user("use a tool please"),), tools=(WEATHER,))
    tool_reply = fake.default(received(tool_request))
    assert isinstance(tool_reply, Json)
    events = translator(tool_request).json_body(orjson.dumps(tool_reply.body))
    first = events[0]
    assert isinstance(first, ChoiceDelta)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("get_weather", "{}")]
    assert first.finish_reason == "tool_calls"
    models = fake.default(Received(method="GET", path="/v1beta/models", query={}, headers={}, body=b""))
    assert isinstance(models, Json)
    assert [m["name"] for m in models.body["models"]] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
