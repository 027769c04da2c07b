"""The OpenAI surface on the wire: statuses, headers and exact bytes through Envoy."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import Stack
from tests.e2e.http import Reply, request

CHAT = "/api/v1/chat/completions"


def chat(stack: Stack, body: dict[str, Any] | str, key: str | None = None, path: str = CHAT) -> Reply:
    headers = {"Authorization": f"Bearer {stack.api_key if key is None else key}"}
    return request(stack.http_port, "POST", path, body, headers)


def hello(**extra: Any) -> dict[str, Any]:
    return {"model": "echo-1", "messages": [{"role": "user", "content": "Hello world"}], **extra}


def assert_openai_error(reply: Reply, status: int, *, code: str | None, param: str | None, kind: str) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (kind, code, param)
    assert not [name for name in reply.headers if name.lower().startswith(("grpc-", "x-http-status", "x-error"))]


def test_non_stream_json_shape(stack: Stack) -> None:
    reply = chat(stack, hello())
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert re.fullmatch(r"req_[0-9a-f]{24}", reply.headers["x-request-id"])
    body = reply.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage", "service_tier"]
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Echo: Hello world", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert all(isinstance(usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    assert not [name for name in reply.headers if name.lower().startswith("grpc-")]


def test_also_served_at_v1_path(stack: Stack) -> None:
    reply = chat(stack, hello(), path="/v1/chat/completions")
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "Echo: Hello world"


def sse_frames(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    return body[:-2].split(b"\n\n")


def test_sse_framing(stack: Stack) -> None:
    reply = chat(stack, hello(stream=True))
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["x-request-id"]
    frames = sse_frames(reply.body)
    assert frames[-1] == b"data: [DONE]"
    assert all(frame.startswith(b"data: {") for frame in frames[:-1])
    chunks = [json.loads(frame[len(b"data: ") :]) for frame in frames[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: Hello world"


def test_sse_include_usage_frames(stack: Stack) -> None:
    frames = sse_frames(chat(stack, hello(stream=True, stream_options={"include_usage": True})).body)
    chunks = [json.loads(frame[len(b"data: ") :]) for frame in frames[:-1]]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_stream_decided_by_body_not_accept_header(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}", "Accept": "text/event-stream"}
    reply = request(stack.http_port, "POST", CHAT, hello(), headers)
    assert reply.headers["content-type"] == "application/json"
    headers["Accept"] = "application/json"
    reply = request(stack.http_port, "POST", CHAT, hello(stream=True), headers)
    assert reply.headers["content-type"] == "text/event-stream"


def test_request_id_is_the_gateways_not_the_callers(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": "req-abc-123"}
    ids = {request(stack.http_port, "POST", CHAT, hello(), headers).headers["x-request-id"] for _ in range(2)}
    assert len(ids) == 2 and "req-abc-123" not in ids


def test_missing_key_is_401(stack: Stack) -> None:
    reply = request(stack.http_port, "POST", CHAT, hello())
    assert_openai_error(reply, 401, code="missing_api_key", param=None, kind="authentication_error")


def test_invalid_key_is_401(stack: Stack) -> None:
    assert_openai_error(
        chat(stack, hello(), key="mwt-nope"), 401, code="invalid_api_key", param=None, kind="authentication_error"
    )


def test_unknown_model_is_404(stack: Stack) -> None:
    reply = chat(stack, hello(model="no-such-model"))
    assert_openai_error(reply, 404, code="model_not_found", param="model", kind="invalid_request_error")


def test_unknown_model_in_stream_is_404_not_a_stream(stack: Stack) -> None:
    reply = chat(stack, hello(model="no-such-model", stream=True))
    assert_openai_error(reply, 404, code="model_not_found", param="model", kind="invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "missing_required_parameter"),
        ({"model": "echo-1"}, "messages", "missing_required_parameter"),
        ({"model": "echo-1", "messages": []}, "messages", "empty_array"),
        ({"model": "echo-1", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        (hello(temperature=3), "temperature", "decimal_above_max_value"),
        (hello(temperature=2.5), "temperature", "decimal_above_max_value"),
        (hello(top_p=1.5), "top_p", "decimal_above_max_value"),
        (hello(n=0), "n", "integer_below_min_value"),
        (hello(n=129), "n", "integer_above_max_value"),
        (hello(max_tokens=0), "max_tokens", "integer_below_min_value"),
        (hello(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
        (hello(stop=5), "stop", "invalid_type"),
        (hello(tool_choice="required"), "tool_choice", "invalid_value"),
        (hello(response_format={"type": "xml"}), "response_format.type", "invalid_value"),
        (hello(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    ],
)
def test_validation_errors(stack: Stack, body: dict[str, Any], param: str, code: str) -> None:
    assert_openai_error(chat(stack, body), 400, code=code, param=param, kind="invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": "echo-1", "temperature": "hot", "messages": []}', "temperature"),
        ('{"model": "echo-1", "n": 1.5, "messages": []}', "n"),
        ('{"model": "echo-1", "messages": [{"role": 7, "content": "x"}]}', "messages[0].role"),
    ],
)
def test_wrong_types_are_400_with_param(stack: Stack, body: str, param: str) -> None:
    assert_openai_error(chat(stack, body), 400, code="invalid_type", param=param, kind="invalid_request_error")


@pytest.mark.parametrize("body", ['{"model": "echo-1", "messages": [', "not json", '["a list"]'])
def test_bad_json_is_400(stack: Stack, body: str) -> None:
    reply = chat(stack, body)
    assert_openai_error(reply, 400, code=None, param=None, kind="invalid_request_error")
    assert reply.json()["error"]["message"].startswith("We could not parse the JSON body")


def test_unknown_path_is_404_in_openai_shape(stack: Stack) -> None:
    reply = request(stack.http_port, "POST", "/api/v1/chat/completion", hello())
    assert_openai_error(reply, 404, code=None, param=None, kind="invalid_request_error")


def test_unknown_fields_are_ignored(stack: Stack) -> None:
    reply = chat(stack, hello(some_future_parameter={"x": 1}))
    assert reply.status == 200


def test_full_parameter_set_is_accepted(stack: Stack) -> None:
    body = hello(
        temperature=0.2,
        top_p=0.9,
        n=1,
        stop="zzz",
        max_tokens=50,
        max_completion_tokens=60,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        user="user-1",
        metadata={"team": "search"},
        modalities=["text"],
        image_config={"aspect_ratio": "1:1"},
        provider={"order": ["echo"], "allow_fallbacks": False, "sort": "price"},
        parallel_tool_calls=False,
        reasoning_effort="low",
        service_tier="auto",
        store=False,
        verbosity="low",
        response_format={"type": "text"},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Really brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "user", "content": "Hello world"},
        ],
    )
    reply = chat(stack, body)
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: Hello world"


def test_non_ascii_in_an_error_message_survives(stack: Stack) -> None:
    reply = chat(stack, hello(model="модель-😀"))
    assert_openai_error(reply, 404, code="model_not_found", param="model", kind="invalid_request_error")
    assert "модель-😀" in reply.json()["error"]["message"]
