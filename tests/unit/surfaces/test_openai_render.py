"""Tests for the OpenAI renderers: exact JSON objects and SSE frames."""

from __future__ import annotations

import json
from typing import Any

from modelway.core.pipeline import CompletedChoice, Completion
from modelway.core.types import ChoiceDelta, ToolCall, ToolCallDelta, Usage
from modelway.errors import GatewayError, Reason
from modelway.surfaces.openai import OPENAI, ChunkWriter, completion_json, error_json, sse_done, sse_event

USAGE_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def usage_json(prompt: int, completion: int, total: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total, **USAGE_DETAILS}


def renderer(include_usage: bool = False) -> ChunkWriter:
    return ChunkWriter("abc", 1767225600, "echo-1", include_usage=include_usage)


def frame_json(frame: bytes) -> dict[str, Any]:
    """The JSON of one SSE frame, after checking the frame is exactly `data: <json>\\n\\n`."""
    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    payload = frame[len(b"data: ") : -2]
    assert b"\n" not in payload
    value: dict[str, Any] = json.loads(payload)
    # Compact separators, as OpenAI sends them.
    assert payload == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return value


def deltas(frames: list[bytes]) -> list[dict[str, Any]]:
    return [choice["delta"] for frame in frames for choice in frame_json(frame)["choices"]]


# --- completion_json --------------------------------------------------------


def test_completion_text() -> None:
    completion = Completion(
        choices=(CompletedChoice(index=0, content="Echo: hi", tool_calls=(), finish_reason="stop"),),
        usage=Usage(prompt_tokens=9, completion_tokens=3),
    )
    raw = completion_json("1", 1767225600, "echo-1", completion)
    value = json.loads(raw)
    assert list(value) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "service_tier",
    ]
    assert value == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "echo-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Echo: hi", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_json(9, 3, 12),
        "service_tier": "default",
    }
    assert b'"refusal":null' in raw and b'"logprobs":null' in raw
    assert b"\n" not in raw and b", " not in raw


def test_completion_tool_calls_with_null_content() -> None:
    calls = (
        ToolCall(id="call_1", name="get_weather", arguments='{"location":"Paris"}'),
        ToolCall(id="call_2", name="search", arguments="{}"),
    )
    completion = Completion(
        choices=(
            CompletedChoice(index=0, content=None, tool_calls=calls, finish_reason="tool_calls"),
            CompletedChoice(index=1, content="", tool_calls=(), finish_reason="length"),
        ),
        usage=Usage(prompt_tokens=20, completion_tokens=15),
    )
    value = json.loads(completion_json("2", 1, "echo-1", completion))
    first, second = value["choices"]
    assert first["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "search", "arguments": "{}"}},
        ],
    }
    assert first["finish_reason"] == "tool_calls"
    assert second == {
        "index": 1,
        "message": {"role": "assistant", "content": "", "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert value["usage"]["total_tokens"] == 35


def test_completion_keeps_non_ascii() -> None:
    completion = Completion(
        choices=(CompletedChoice(index=0, content="東京 ☃", tool_calls=(), finish_reason="stop"),),
        usage=Usage(),
    )
    raw = completion_json("c", 0, "m", completion)
    assert "東京 ☃".encode() in raw
    assert json.loads(raw)["usage"] == usage_json(0, 0, 0)


# --- ChunkWriter ------------------------------------------------------------


def test_chunk_envelope_without_usage() -> None:
    value = frame_json(renderer().delta(ChoiceDelta(index=0, content="Hi")))
    assert list(value) == ["id", "object", "created", "model", "choices"]
    assert value == {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "echo-1",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "Hi", "refusal": None},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }


def test_text_stream() -> None:
    render = renderer()
    frames = [
        render.delta(ChoiceDelta(index=0)),
        render.delta(ChoiceDelta(index=0, content="Echo:")),
        render.delta(ChoiceDelta(index=0, content=" hi")),
        render.delta(ChoiceDelta(index=0, finish_reason="stop")),
    ]
    assert deltas(frames) == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Echo:"},
        {"content": " hi"},
        {},
    ]
    assert [frame_json(f)["choices"][0]["finish_reason"] for f in frames] == [None, None, None, "stop"]
    assert all("usage" not in frame_json(f) for f in frames)


def test_each_choice_gets_its_own_role_delta() -> None:
    render = renderer()
    frames = [
        render.delta(ChoiceDelta(index=0, content="a")),
        render.delta(ChoiceDelta(index=1, content="a")),
        render.delta(ChoiceDelta(index=0, content="b")),
        render.delta(ChoiceDelta(index=1, content="b")),
        render.delta(ChoiceDelta(index=0, finish_reason="length")),
        render.delta(ChoiceDelta(index=1, finish_reason="stop")),
    ]
    choices = [frame_json(f)["choices"] for f in frames]
    assert all(len(c) == 1 for c in choices)
    assert [c[0]["index"] for c in choices] == [0, 1, 0, 1, 0, 1]
    assert [c[0]["delta"] for c in choices] == [
        {"role": "assistant", "content": "a", "refusal": None},
        {"role": "assistant", "content": "a", "refusal": None},
        {"content": "b"},
        {"content": "b"},
        {},
        {},
    ]
    assert [c[0]["finish_reason"] for c in choices] == [None, None, None, None, "length", "stop"]


def test_tool_call_stream() -> None:
    render = renderer()
    frames = [
        render.delta(ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, id="call_1", name="get_weather"),))),
        render.delta(ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='{"loc'),))),
        render.delta(ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=0, arguments='ation":"Paris"}'),))),
        render.delta(ChoiceDelta(index=0, tool_calls=(ToolCallDelta(index=1, id="call_2", name="search"),))),
        render.delta(ChoiceDelta(index=0, finish_reason="tool_calls")),
    ]
    assert deltas(frames) == [
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ],
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ation":"Paris"}'}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "call_2", "type": "function", "function": {"name": "search", "arguments": ""}}
            ]
        },
        {},
    ]
    assert frame_json(frames[-1])["choices"][0]["finish_reason"] == "tool_calls"


def test_with_include_usage_every_chunk_has_null_usage() -> None:
    render = renderer(include_usage=True)
    frames = [
        render.delta(ChoiceDelta(index=0, content="Hi")),
        render.delta(ChoiceDelta(index=0, finish_reason="stop")),
    ]
    for frame in frames:
        value = frame_json(frame)
        assert list(value) == ["id", "object", "created", "model", "choices", "usage"]
        assert value["usage"] is None
    last = frame_json(render.event(Usage(prompt_tokens=10, completion_tokens=4)))
    assert last == {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "echo-1",
        "choices": [],
        "usage": usage_json(10, 4, 14),
    }


def test_frames_are_exact_bytes() -> None:
    frame = renderer().delta(ChoiceDelta(index=0, content="é\n"))
    assert frame == (
        b'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1767225600,"model":"echo-1",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"\xc3\xa9\\n",'
        b'"refusal":null},"logprobs":null,"finish_reason":null}]}\n\n'
    )


def test_sse_helpers() -> None:
    assert sse_done() == b"data: [DONE]\n\n"
    assert sse_event(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_error_written_into_the_stream() -> None:
    frame = renderer(include_usage=True).error(GatewayError(Reason.INVALID_VALUE, "bad", param="n"))
    assert frame_json(frame) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "invalid_value"}
    }


# --- error_json -------------------------------------------------------------


def test_error_json_invalid_request() -> None:
    raw = error_json(GatewayError(Reason.INVALID_VALUE, "x", param="temperature"))
    assert (
        raw == b'{"error":{"message":"x","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}'
    )


def test_error_json_not_found() -> None:
    error = GatewayError(Reason.MODEL_NOT_FOUND, "The model 'gpt-9' does not exist or you do not have access to it.")
    assert json.loads(error_json(error)) == {
        "error": {
            "message": "The model 'gpt-9' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    assert error.http_status == 404


def test_text_beside_a_tool_call_is_kept() -> None:
    frame = renderer().delta(
        ChoiceDelta(index=0, content="Let me check.", tool_calls=(ToolCallDelta(index=0, id="call_1", name="f"),))
    )
    [delta] = deltas([frame])
    assert delta["content"] == "Let me check."
    assert delta["tool_calls"][0]["id"] == "call_1"


def test_usage_is_dropped_unless_asked_for_and_the_stream_ends_with_done() -> None:
    render = renderer()
    assert render.event(Usage(prompt_tokens=1, completion_tokens=1)) == b""
    assert frame_json(render.event(ChoiceDelta(index=0, content="x")))["choices"][0]["delta"]["content"] == "x"
    assert render.end() == b"data: [DONE]\n\n"


def test_an_empty_balance_is_openais_429_insufficient_quota() -> None:
    error = GatewayError(Reason.INSUFFICIENT_CREDITS, "You exceeded your current quota.")
    assert error.http_status == 402
    assert OPENAI.status(error) == 429
    assert OPENAI.error_response(error) == (
        429,
        b'{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota",'
        b'"param":null,"code":"insufficient_quota"}}',
    )


def test_rate_limit_error_body() -> None:
    error = GatewayError(Reason.RATE_LIMITED, "slow down", retry_after=3)
    assert OPENAI.error_response(error) == (
        429,
        b'{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
    )
