"""Tests for the Gemini request parser and dialect: literal JSON in, canonical types and exact bytes out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from modelway.core.pipeline import CompletedChoice, Completion
from modelway.core.types import ChoiceDelta, ImagePart, TextPart, ToolCall, ToolCallDelta, ToolChoice, Usage
from modelway.errors import REASONS, GatewayError, Reason
from modelway.surfaces.gemini import GEMINI, GeminiStreamWriter, completion_dict, error_dict
from modelway.surfaces.gemini_request import (
    model_from_path,
    parse_generate_content,
    parse_generate_content_body,
    schema_to_json_schema,
)

HELLO = {"contents": [{"parts": [{"text": "hi"}]}]}


@dataclass
class Run:
    """What the dialect reads of a ChatRun."""

    model: str = "echo-1"
    id: str = "rid"


def parse(body: dict[str, Any], stream: bool = False) -> Any:
    return parse_generate_content("echo-1", body, stream=stream)


def refused(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(body)
    assert caught.value.http_status == 400
    return caught.value


# --- parser ------------------------------------------------------------------


def test_model_from_path_decodes_and_drops_the_resource_prefix() -> None:
    assert model_from_path("ft%3Agpt-4o%3Aorg") == "ft:gpt-4o:org"
    assert model_from_path("models%2Fmeta-llama%2FLlama-3") == "meta-llama/Llama-3"
    assert model_from_path("echo-1") == "echo-1"


def test_camel_and_snake_case_at_every_depth_parse_alike() -> None:
    camel = {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}
        ],
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "generationConfig": {
            "temperature": 1,
            "topP": 0.5,
            "maxOutputTokens": 7,
            "stopSequences": ["x"],
            "candidateCount": 2,
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"first_name": {"type": "STRING", "nullable": True}}},
        },
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
    }
    snake = {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}, {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]}
        ],
        "system_instruction": {"parts": [{"text": "sys"}]},
        "generation_config": {
            "temperature": 1,
            "top_p": 0.5,
            "max_output_tokens": 7,
            "stop_sequences": ["x"],
            "candidate_count": 2,
            "response_mime_type": "application/json",
            "response_schema": {"type": "OBJECT", "properties": {"first_name": {"type": "STRING", "nullable": True}}},
        },
        "tools": [{"function_declarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}},
    }
    request = parse(camel)
    assert request == parse(snake)
    system, user = request.messages
    assert (system.role, system.text) == ("system", "sys")
    assert user.content == (TextPart("a"), ImagePart("data:image/png;base64,AAAA"))
    assert (request.temperature, request.top_p, request.max_tokens, request.stop, request.n) == (1.0, 0.5, 7, ("x",), 2)
    assert request.response_format.type == "json_schema"
    # Property names are the caller's: first_name stays snake_case; Gemini types become JSON Schema's.
    assert request.response_format.schema == {
        "type": "object",
        "properties": {"first_name": {"type": ["string", "null"]}},
    }
    assert request.tool_choice == ToolChoice("function", "f")
    assert request.tools[0].parameters == {"type": "object"}


def test_function_calls_and_responses_become_tool_messages_matched_by_name() -> None:
    request = parse(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"city": "Oslo"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 3}}}, {"text": "ok"}]},
            ]
        }
    )
    _, assistant, tool, follow = request.messages
    assert assistant.role == "assistant"
    [call] = assistant.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("w", {"city": "Oslo"})
    assert (tool.role, tool.name, tool.tool_call_id, json.loads(tool.text)) == ("tool", "w", call.id, {"t": 3})
    assert (follow.role, follow.text) == ("user", "ok")


def test_tool_modes() -> None:
    tools = {"tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}]}
    assert parse({**HELLO, **tools}).tool_choice == ToolChoice("auto")
    assert parse(HELLO).tool_choice == ToolChoice("none")
    none = parse({**HELLO, **tools, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}})
    assert none.tool_choice == ToolChoice("none")
    narrowed = parse(
        {**HELLO, **tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "b"]}}}
    )
    assert narrowed.tool_choice == ToolChoice("required") and len(narrowed.tools) == 2


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({}, "contents", Reason.MISSING_REQUIRED_PARAMETER),
        ({"contents": "hi"}, "contents", Reason.INVALID_TYPE),
        ({"contents": [{"parts": []}]}, "contents[0].parts", Reason.MISSING_REQUIRED_PARAMETER),
        ({"contents": [{"role": "bot", "parts": [{"text": "x"}]}]}, "contents[0].role", Reason.INVALID_VALUE),
        ({"contents": [{"role": "model", "parts": [{"text": "x"}]}]}, "contents", Reason.INVALID_VALUE),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "%%"}}]}]},
            "contents[0].parts[0].inlineData.data",
            Reason.INVALID_VALUE,
        ),
        (
            {"contents": [{"parts": [{"fileData": {"fileUri": "file:///etc/passwd"}}]}]},
            "contents[0].parts[0].fileData.fileUri",
            Reason.INVALID_VALUE,
        ),
        ({**HELLO, "generationConfig": {"temperature": 2.5}}, "generationConfig.temperature", Reason.INVALID_VALUE),
        (
            {**HELLO, "generationConfig": {"maxOutputTokens": 0}},
            "generationConfig.maxOutputTokens",
            Reason.INVALID_VALUE,
        ),
        ({**HELLO, "generationConfig": {"candidateCount": 9}}, "generationConfig.candidateCount", Reason.INVALID_VALUE),
        ({**HELLO, "generationConfig": {"topK": True}}, "generationConfig.topK", Reason.INVALID_TYPE),
        (
            {**HELLO, "generationConfig": {"stopSequences": ["a"] * 6}},
            "generationConfig.stopSequences",
            Reason.INVALID_VALUE,
        ),
        (
            {**HELLO, "generationConfig": {"responseMimeType": "text/csv"}},
            "generationConfig.responseMimeType",
            Reason.INVALID_VALUE,
        ),
        (
            {**HELLO, "generationConfig": {"responseSchema": {"type": "OBJECT"}}},
            "generationConfig.responseMimeType",
            Reason.INVALID_VALUE,
        ),
        (
            {**HELLO, "tools": [{"functionDeclarations": [{"name": "9x"}]}]},
            "tools[0].functionDeclarations[0].name",
            Reason.INVALID_VALUE,
        ),
        ({**HELLO, "tools": [{"codeExecution": {}}]}, "tools[0].codeExecution", Reason.INVALID_VALUE),
        (
            {**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
            "toolConfig.functionCallingConfig.mode",
            Reason.INVALID_VALUE,
        ),
        (
            {**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
            "toolConfig.functionCallingConfig.mode",
            Reason.INVALID_VALUE,
        ),
        ({**HELLO, "safetySettings": [{"category": 1}]}, "safetySettings[0].category", Reason.INVALID_TYPE),
        (
            {"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]},
            "contents[0].parts[0].executableCode",
            Reason.INVALID_VALUE,
        ),
    ],
)
def test_bad_fields_are_400_naming_the_camel_case_path(body: dict[str, Any], field: str, reason: Reason) -> None:
    error = refused(body)
    assert (error.reason, error.param) == (reason, field)
    assert field in error.message


def test_bounds_and_bad_json() -> None:
    deep: Any = {}
    for _ in range(70):
        deep = {"x": deep}
    assert refused({**HELLO, "generationConfig": deep}).reason == Reason.NESTED_TOO_DEEPLY
    assert refused({"contents": [{"parts": [{"text": "x"}]}] * 2049}).reason == Reason.ARRAY_TOO_LONG
    with pytest.raises(GatewayError) as caught:
        parse_generate_content_body("echo-1", b"[1", stream=False)
    assert caught.value.reason == Reason.INVALID_BODY
    assert caught.value.message.startswith("Invalid JSON payload received.")


def test_schema_conversion_keeps_property_names_and_lowercases_types() -> None:
    schema = schema_to_json_schema(
        {
            "type": "ARRAY",
            "items": {"any_of": [{"type": "INTEGER"}, {"type": "STRING", "enum": ["a"]}]},
            "max_items": 3,
            "propertyOrdering": ["x"],
        },
        "s",
    )
    assert schema == {
        "type": "array",
        "items": {"anyOf": [{"type": "integer"}, {"type": "string", "enum": ["a"]}]},
        "maxItems": 3,
    }


# --- dialect -----------------------------------------------------------------


def test_every_reason_has_a_google_status() -> None:
    expected = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
    for reason in REASONS:
        status, body = GEMINI.error_response(GatewayError(reason, "m"))
        error = json.loads(body)["error"]
        assert error["code"] == status
        assert error["status"] == expected[status], reason
    # Google has no 402: an empty balance is quota.
    assert GEMINI.error_response(GatewayError(Reason.INSUFFICIENT_CREDITS, "m"))[0] == 429


def test_error_body_with_retry_info() -> None:
    error = GatewayError(Reason.RATE_LIMITED, "Slow down", retry_after=2.2, param="model")
    assert error_dict(error) == {
        "error": {
            "code": 429,
            "message": "Slow down",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMITED",
                    "domain": "modelway",
                    "metadata": {"field": "model"},
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"},
            ],
        }
    }


def test_completion_with_text_and_function_calls() -> None:
    completion = Completion(
        (
            CompletedChoice(0, "hi", (), "stop"),
            CompletedChoice(1, None, (ToolCall("c1", "f", '{"a":1}'),), "tool_calls"),
            CompletedChoice(2, "", (), "length"),
        ),
        Usage(3, 4),
    )
    assert completion_dict(Run(), completion) == {  # type: ignore[arg-type]
        "candidates": [
            {"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP", "index": 0},
            {
                "content": {"parts": [{"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}], "role": "model"},
                "finishReason": "STOP",
                "index": 1,
            },
            {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 2},
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
        "modelVersion": "echo-1",
        "responseId": "rid",
    }


def test_stream_frames_hold_calls_until_the_end_and_use_crlf() -> None:
    writer = GeminiStreamWriter(Run())  # type: ignore[arg-type]
    frames = [
        writer.event(ChoiceDelta(0, content="Hel")),
        writer.event(ChoiceDelta(0, tool_calls=(ToolCallDelta(0, id="c", name="f", arguments='{"a"'),))),
        writer.event(ChoiceDelta(0, tool_calls=(ToolCallDelta(0, arguments=":2}"),))),
        writer.event(ChoiceDelta(0, finish_reason="tool_calls")),
        writer.event(Usage(1, 2)),
    ]
    assert frames[1:4] == [b"", b"", b""]
    assert frames[0] == (
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],'
        b'"modelVersion":"echo-1","responseId":"rid"}\r\n\r\n'
    )
    assert frames[4] == (
        b'data: {"candidates":[{"content":{"parts":[{"functionCall":{"id":"c","name":"f","args":{"a":2}}}],'
        b'"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,'
        b'"candidatesTokenCount":2,"totalTokenCount":3},"modelVersion":"echo-1","responseId":"rid"}\r\n\r\n'
    )
    assert writer.end() == b""
    assert writer.error(GatewayError(Reason.PROVIDER_ERROR, "gone")).startswith(b'data: {"error":{"code":502,')
