"""Property-based fuzzing of every REST surface (through the real Envoy) and of the native gRPC API.

The invariant, whatever hypothesis sends: a 2xx, or a 4xx in the surface's own error shape whose
message names the problem in the API's words (no protobuf, Python or gRPC internals); never a 5xx;
the server stays up and its RSS comes back near where it started.

`make test` runs a few hundred examples (QUICK); the long run is behind the `fuzz` marker:

    .venv/bin/python -m pytest -m fuzz tests/e2e/test_fuzz.py -s
"""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelway.v1 import (
    catalog_pb2,
    chat_pb2,
    conversations_pb2,
    gemini_pb2,
    generate_pb2,
    images_pb2,
    keys_pb2,
    models_pb2,
    usage_pb2,
)
from modelway.v1.rest import ai_pb2 as ai_rest_pb2
from modelway.v1.rest import catalog_pb2 as catalog_rest_pb2
from modelway.v1.rest import chat_pb2 as chat_rest_pb2
from modelway.v1.rest import conversations_pb2 as conversations_rest_pb2
from modelway.v1.rest import gemini_pb2 as gemini_rest_pb2
from modelway.v1.rest import images_pb2 as images_rest_pb2
from modelway.v1.rest import keys_pb2 as keys_rest_pb2
from tests.conftest import Stack, _grpc_serving
from tests.e2e.http import request
from tests.e2e.test_malformed import rss_mb

INTERNALS = re.compile(
    r"google\.protobuf|DecodeError|Traceback|<class|grpc|upb_|Exception|proto|modelway\.v1\.", re.IGNORECASE
)
# Native callers are told which message did not decode: that name is the API's own word there.
NATIVE_INTERNALS = re.compile(r"google\.protobuf|DecodeError|Traceback|<class|upb_|Exception", re.IGNORECASE)
SERVER_FAULTS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}

# (examples per property) in `make test`, and in the `fuzz` run.
QUICK, LONG = 1, 20
SCALES = [pytest.param(QUICK, id="quick"), pytest.param(LONG, id="long", marks=pytest.mark.fuzz)]


def run(examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=examples <= 200,  # the suite's short run is the same every time
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(value: Any) -> None:
        check(value)

    prop()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)
CHAT_FIELDS = [
    "model", "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "metadata",
    "reasoning_effort", "functions", "function_call", "provider",
]  # fmt: skip
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "nobody"])},
        optional={
            "content": st.one_of(
                st.text(max_size=30),
                st.lists(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image_url", "audio"])},
                        optional={"text": json_values, "image_url": json_values},
                    ),
                    max_size=3,
                ),
                json_values,
            ),
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "name": json_values,
            "function_call": json_values,
        },
    ),
    max_size=4,
)
chat_bodies = st.one_of(
    # Mostly a real model and messages, so the checks past them are reached; any other field hostile.
    st.fixed_dictionaries(
        {"model": st.sampled_from(["echo-1", "echo-mini", "auto", "nope"]), "messages": messages},
        optional={field: json_values for field in CHAT_FIELDS[2:]},
    ),
    st.dictionaries(st.sampled_from(CHAT_FIELDS), json_values, max_size=6),
    json_values,
)


def check_openai_reply(status: int, body: bytes, echoed: tuple[str, ...] = ()) -> None:
    """A success, or a 4xx in OpenAI's shape whose words (less the caller's own values) are ours."""
    assert status < 500, (status, body[:400])
    if status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        message = error["message"]
        assert message, error
        for value in echoed:
            message = message.replace(value, "")
        assert not INTERNALS.search(message), error


def check_stream(body: bytes) -> None:
    """A 200 stream ends with [DONE]; an error inside it is in OpenAI's shape too."""
    if not body.startswith(b"data: "):
        return
    assert body.endswith(b"data: [DONE]\n\n"), body[-200:]
    for frame in body.split(b"\n\n"):
        if frame.startswith(b'data: {"error"'):
            check_openai_reply(400, frame[6:])


@pytest.fixture(scope="module")
def baseline(stack: Stack) -> float:
    return rss_mb(stack)


@pytest.mark.parametrize("scale", SCALES)
def test_chat_completions(stack: Stack, baseline: float, scale: int) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def check(body: Any) -> None:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        reply = request(stack.http_port, "POST", "/api/v1/chat/completions", raw, headers)
        check_openai_reply(reply.status, reply.body, _strings(body))
        if reply.status == 200:
            check_stream(reply.body)

    run(150 * scale, st.one_of(chat_bodies, st.binary(max_size=64)), check)


path_text = st.text(max_size=60) | st.binary(max_size=30).map(lambda b: b.decode("latin-1"))


@pytest.mark.parametrize("scale", SCALES)
def test_models(stack: Stack, scale: int) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def check(name: str) -> None:
        raw = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        for path in (f"/api/v1/models/{raw}", f"/v1/models/{raw}"):
            reply = request(stack.http_port, "GET", path, None, headers)
            check_openai_reply(reply.status, reply.body, (name,))

    run(40 * scale, path_text | st.binary(max_size=20).map(lambda b: "".join(f"%{x:02x}" for x in b)), check)


IMAGE_FIELDS = ["model", "prompt", "n", "size", "quality", "response_format", "style", "user"]
image_bodies = st.one_of(
    st.fixed_dictionaries(
        {"prompt": st.text(max_size=50)}, optional={field: json_values for field in IMAGE_FIELDS if field != "prompt"}
    ),
    st.dictionaries(st.sampled_from(IMAGE_FIELDS), json_values, max_size=5),
    json_values,
)


@pytest.mark.parametrize("scale", SCALES)
def test_images(stack: Stack, scale: int) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def check(case: tuple[Any, str]) -> None:
        body, name = case
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        reply = request(stack.http_port, "POST", "/api/v1/images/generations", raw, headers)
        check_openai_reply(reply.status, reply.body, _strings(body))
        path = "/api/v1/images/files/" + urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        reply = request(stack.http_port, "GET", path)
        assert reply.status == 404 if name else reply.status in (400, 404), (name, reply.status)
        check_openai_reply(reply.status, reply.body, (name,))

    run(40 * scale, st.tuples(st.one_of(image_bodies, st.binary(max_size=64)), path_text), check)


key_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.text(max_size=120), json_values),
            "permissions": json_values,
            "expires_at": json_values,
            "expires_in_days": json_values,
            "rate_limit": json_values,
            "daily_token_budget": json_values,
            "allowed_models": json_values,
            "is_enabled": json_values,
        },
    ),
    json_values,
)


def _strings(value: Any) -> tuple[str, ...]:
    """Every string in a JSON value (keys included): what an error may quote back."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(s for item in value for s in _strings(item))
    if isinstance(value, dict):
        return tuple(s for key, item in value.items() for s in (key, *_strings(item)))
    return ()


@pytest.mark.parametrize("scale", SCALES)
def test_api_keys(stack: Stack, scale: int) -> None:
    account = stack.create_account(f"fuzz-keys-{scale}")
    _, secret = stack.create_key("fuzzer", account)
    headers = {"Authorization": f"Bearer {secret}"}

    def check(case: tuple[str, str, Any]) -> None:
        method, key_id, body = case
        raw = urllib.parse.quote(key_id, safe="")
        path = {"POST": "/api/v1/api-keys", "PATCH": f"/api/v1/api-keys/{raw}", "DELETE": f"/api/v1/api-keys/{raw}"}
        reply = request(stack.http_port, method, path[method], json.dumps(body), headers)
        assert reply.status < 500, (reply.status, reply.body[:300])
        if reply.status >= 400:
            check_openai_reply(reply.status, reply.body, (key_id, *_strings(body)))

    cases = st.tuples(st.sampled_from(["POST", "PATCH", "DELETE"]), path_text.filter(bool), key_bodies)
    run(40 * scale, cases, check)


@pytest.mark.parametrize("scale", SCALES)
def test_api_usage(stack: Stack, scale: int) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def check(query: dict[str, str]) -> None:
        reply = request(stack.http_port, "GET", "/api/v1/api-usage?" + urllib.parse.urlencode(query), None, headers)
        check_openai_reply(reply.status, reply.body, tuple(query.values()))

    dates = st.one_of(st.dates().map(str), st.text(max_size=20))
    run(30 * scale, st.fixed_dictionaries({}, optional={"start_date": dates, "end_date": dates}), check)


NATIVE_API_FIELDS = ["model", "messages", "prompt", "system", "temperature", "max_tokens", "stream"]
native_api_bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.sampled_from(["echo-1", "echo-mini", "auto", "nope"])},
        optional={
            "messages": messages,
            "prompt": st.text(max_size=30),
            **{f: json_values for f in NATIVE_API_FIELDS[3:]},
        },
    ),
    st.dictionaries(st.sampled_from(NATIVE_API_FIELDS), json_values, max_size=5),
    json_values,
)


def check_native_api_reply(status: int, body: bytes, echoed: tuple[str, ...]) -> None:
    """A success (JSON, or SSE ending in [DONE]), or a 4xx {"error": {"code", "message"}} in our words."""
    assert status < 500, (status, body[:400])
    if status >= 400:
        error = json.loads(body)["error"]
        assert list(error) == ["code", "message"] and error["code"].isupper(), error
        message = error["message"]
        for value in echoed:
            message = message.replace(value, "")
        assert not INTERNALS.search(message), error
    elif body.startswith(b"data: "):
        assert body.endswith(b"data: [DONE]\n\n"), body[-200:]


@pytest.mark.parametrize("scale", SCALES)
def test_native_api(stack: Stack, scale: int) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def check(case: tuple[str, Any]) -> None:
        path, body = case
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        reply = request(stack.http_port, "POST", path, raw, headers)
        check_native_api_reply(reply.status, reply.body, _strings(body))

    paths = st.sampled_from(["/api/v1/ai/chat", "/api/v1/ai/generate"])
    run(80 * scale, st.tuples(paths, st.one_of(native_api_bodies, st.binary(max_size=64))), check)


def check_envelope_reply(status: int, body: bytes, echoed: tuple[str, ...]) -> None:
    """A success in the envelope, or a 4xx {"success": false, "message"} in our words."""
    assert status < 500, (status, body[:400])
    reply = json.loads(body)
    assert reply["success"] is (status < 400), reply
    if status >= 400:
        assert list(reply) == ["success", "message"], reply
        message = reply["message"]
        for value in echoed:
            message = message.replace(value, "")
        assert message and not INTERNALS.search(message), reply


# Ids at and past the store's 64-bit limit (and digit strings int() refuses): a 404, never a 500.
edge_ids = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63) - 1])
edge_id_texts = st.sampled_from(["9223372036854775807", "9223372036854775808", "18446744073709551616", "9" * 5000])
chat_send_bodies = st.one_of(
    st.fixed_dictionaries(
        {"model_id": st.one_of(st.sampled_from(["echo-1", 1, 2, "nope", 0]), edge_ids, edge_id_texts)},
        optional={
            "message": st.one_of(st.text(max_size=30), json_values),
            "conversation_id": st.one_of(json_values, edge_ids),
        },
    ),
    st.dictionaries(st.sampled_from(["model_id", "message", "conversation_id"]), json_values, max_size=3),
    json_values,
)


@pytest.mark.parametrize("scale", SCALES)
def test_catalog_and_chat_send(stack: Stack, scale: int) -> None:
    headers = {"X-API-Key": stack.api_key}

    def check(case: tuple[Any, dict[str, str], str]) -> None:
        body, query, conversation = case
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        reply = request(stack.http_port, "POST", "/api/v1/chat/send", raw, headers)
        check_envelope_reply(reply.status, reply.body, _strings(body))
        path = "/api/models?" + urllib.parse.urlencode(query)
        reply = request(stack.http_port, "GET", path)
        check_envelope_reply(reply.status, reply.body, tuple(query.values()))
        path = "/api/v1/chat/conversations/" + urllib.parse.quote(conversation, safe="")
        reply = request(stack.http_port, "GET", path, headers=headers)
        check_envelope_reply(reply.status, reply.body, (conversation,))
        reply = request(stack.http_port, "GET", "/api/models/" + urllib.parse.quote(conversation, safe=""))
        check_envelope_reply(reply.status, reply.body, (conversation,))

    query = st.fixed_dictionaries(
        {},
        optional={name: st.one_of(st.text(max_size=20), edge_id_texts) for name in ("q", "category", "type", "page")},
    )
    conversations = st.one_of(st.text(max_size=20), edge_id_texts)
    run(40 * scale, st.tuples(st.one_of(chat_send_bodies, st.binary(max_size=64)), query, conversations), check)


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def spelled(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose fields may each come in camelCase, snake_case or both (the SDK mixes them)."""
    return st.fixed_dictionaries(
        {}, optional={name: value for camel, value in fields.items() for name in {camel, _snake(camel)}}
    )


gemini_parts = st.lists(
    st.one_of(
        spelled(
            {
                "text": st.one_of(st.text(max_size=30), json_values),
                "inlineData": st.one_of(
                    spelled(
                        {
                            "mimeType": st.sampled_from(["image/png", "text/plain", ""]) | json_values,
                            "data": st.sampled_from(["iVBORw0KGgo=", "!!", ""]) | json_values,
                        }
                    ),
                    json_values,
                ),
                "functionCall": st.one_of(spelled({"name": json_values, "args": json_values, "id": json_values})),
                "functionResponse": spelled({"name": json_values, "response": json_values}),
                "fileData": json_values,
                "thought": json_values,
                "executableCode": json_values,
            }
        ),
        json_values,
    ),
    max_size=3,
)
gemini_contents = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"parts": gemini_parts}, optional={"role": st.sampled_from(["user", "model", "function", "system", ""])}
        ),
        spelled({"role": json_values, "parts": json_values}),
    ),
    max_size=3,
)
gemini_config = spelled(
    {
        "temperature": json_values,
        "topP": json_values,
        "topK": json_values,
        "maxOutputTokens": st.integers(-5, 2**40) | json_values,
        "stopSequences": st.lists(st.text(max_size=8), max_size=7) | json_values,
        "candidateCount": st.integers(-2, 12) | json_values,
        "responseMimeType": st.sampled_from(["application/json", "text/plain", "text/x.enum"]) | json_values,
        "responseSchema": json_values,
        "responseJsonSchema": json_values,
        "seed": json_values,
        "thinkingConfig": json_values,
    }
)
gemini_tools = st.lists(
    spelled(
        {
            "functionDeclarations": st.lists(
                spelled(
                    {
                        "name": st.sampled_from(["get_weather", "9bad", ""]) | json_values,
                        "description": json_values,
                        "parameters": json_values,
                        "parametersJsonSchema": json_values,
                    }
                ),
                max_size=2,
            )
            | json_values,
            "googleSearch": json_values,
            "codeExecution": json_values,
        }
    )
    | json_values,
    max_size=2,
)
# Contents that parse (a user turn of text), so the checks past them are reached.
plain_contents = st.lists(
    st.fixed_dictionaries(
        {"parts": st.lists(st.fixed_dictionaries({"text": st.text(min_size=1, max_size=20)}), min_size=1, max_size=2)},
        optional={"role": st.just("user")},
    ),
    min_size=1,
    max_size=2,
)
gemini_bodies = st.one_of(
    st.fixed_dictionaries({"contents": gemini_contents}),
    # Mostly: contents that parse, every other field hostile, in either spelling.
    st.fixed_dictionaries(
        {"contents": plain_contents | plain_contents | gemini_contents},
        optional={
            "generationConfig": gemini_config | json_values,
            "generation_config": gemini_config,
            "systemInstruction": st.one_of(st.text(max_size=20), spelled({"parts": gemini_parts}), json_values),
            "system_instruction": spelled({"parts": gemini_parts, "role": json_values}),
            "tools": gemini_tools,
            "toolConfig": spelled(
                {"functionCallingConfig": spelled({"mode": json_values, "allowedFunctionNames": json_values})}
            )
            | json_values,
            "tool_config": json_values,
            "safetySettings": json_values,
            "safety_settings": st.lists(spelled({"category": json_values, "threshold": json_values}), max_size=2),
            "cachedContent": json_values,
            "labels": json_values,
        },
    ),
    json_values,
)
gemini_models = st.one_of(
    st.sampled_from(["echo-1", "echo-mini", "nope", "models/echo-1", "ech%6F-1"]),
    path_text.map(lambda name: urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")),
)


def check_gemini_error(status: int, value: Any, echoed: tuple[str, ...]) -> None:
    """Google's shape, {"error": {"code": <the HTTP status>, "message", "status", "details"?}}, in our words."""
    error = value["error"]
    assert {"code", "message", "status"} <= set(error) <= {"code", "message", "status", "details"}, error
    assert error["code"] == status and re.fullmatch(r"[A-Z_]+", error["status"]), error
    message = error["message"]
    assert message, error
    for text in sorted(echoed, key=len, reverse=True):
        message = message.replace(text, "")
    assert not INTERNALS.search(message), error


def check_gemini_reply(status: int, body: bytes, echoed: tuple[str, ...], success: str = "candidates") -> None:
    """A success (JSON with `success`, or `data: {json}\\r\\n\\r\\n` events ending in the usage or an error
    event), or a 4xx in Google's shape."""
    assert status < 500, (status, body[:400])
    if status >= 400:
        check_gemini_error(status, json.loads(body), echoed)
    elif body.startswith(b"data: "):
        assert body.endswith(b"\r\n\r\n") and b"[DONE]" not in body, body[-200:]
        events = [json.loads(frame[6:]) for frame in body[:-4].split(b"\r\n\r\n")]
        assert all("error" not in event for event in events[:-1]), body[-400:]
        if "error" in events[-1]:
            check_gemini_error(events[-1]["error"]["code"], events[-1], echoed)
            assert events[-1]["error"]["code"] < 500, events[-1]
        else:
            assert "usageMetadata" in events[-1], body[-400:]
    else:
        assert success in json.loads(body), body[:400]


@pytest.mark.parametrize("scale", SCALES)
def test_gemini_generate_content(stack: Stack, scale: int) -> None:
    def check(case: tuple[str, str, bool, bool, Any]) -> None:
        version, model, streaming, key_in_query, body = case
        method = "streamGenerateContent?alt=sse" if streaming else "generateContent"
        path = f"/api/{version}/models/{model}:{method}"
        headers = {} if key_in_query else {"x-goog-api-key": stack.api_key}
        if key_in_query:
            path += ("&" if "?" in path else "?") + "key=" + stack.api_key
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        reply = request(stack.http_port, "POST", path, raw, headers)
        names = (model, urllib.parse.unquote(model, errors="surrogatepass"))
        check_gemini_reply(reply.status, reply.body, (*names, *_strings(body)))

    cases = st.tuples(
        st.sampled_from(["v1beta", "v1"]),
        gemini_models,
        st.booleans(),
        st.booleans(),
        st.one_of(gemini_bodies, st.binary(max_size=64)),
    )
    run(100 * scale, cases, check)


@pytest.mark.parametrize("scale", SCALES)
def test_gemini_models(stack: Stack, scale: int) -> None:
    headers = {"x-goog-api-key": stack.api_key}

    def check(case: tuple[str, dict[str, str]]) -> None:
        name, query = case
        raw = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        # /api/v1/models too: a Gemini key there reads Gemini's models (the SDK's default api_version).
        for prefix in ("/api/v1beta/models", "/api/v1/models"):
            got = request(stack.http_port, "GET", f"{prefix}/{raw}", None, headers)
            check_gemini_reply(got.status, got.body, (name, raw), success="name")
            listed = request(stack.http_port, "GET", f"{prefix}?" + urllib.parse.urlencode(query), None, headers)
            check_gemini_reply(listed.status, listed.body, tuple(query.values()), success="models")

    page = st.one_of(st.integers(-5, 2**40).map(str), st.text(max_size=12))
    queries = st.fixed_dictionaries({}, optional={"pageSize": page, "pageToken": page, "page_size": page})
    run(40 * scale, st.tuples(path_text.filter(bool), queries), check)


def native_methods() -> list[tuple[str, bool, Any]]:
    found = []
    for module in (
        chat_pb2,
        models_pb2,
        keys_pb2,
        usage_pb2,
        chat_rest_pb2,
        keys_rest_pb2,
        generate_pb2,
        ai_rest_pb2,
        gemini_pb2,
        gemini_rest_pb2,
        images_pb2,
        images_rest_pb2,
        catalog_pb2,
        catalog_rest_pb2,
        conversations_pb2,
        conversations_rest_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append((f"/{service.full_name}/{method.name}", method.server_streaming, method.input_type))
    return found


def test_the_native_methods_cover_every_service_the_server_offers(stack: Stack) -> None:
    """A service added to the server joins the gRPC properties below: the list is checked against reflection."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        [reply] = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    served = {service.name for service in reply.list_services_response.service if service.name.startswith("modelway.")}
    fuzzed = {method.split("/")[1] for method, _, _ in native_methods()}
    assert served == fuzzed


def native_outcome(stack: Stack, method: str, streaming: bool, payload: bytes) -> tuple[grpc.StatusCode, str]:
    auth = (("authorization", f"Bearer {stack.api_key}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        try:
            if streaming:
                list(channel.unary_stream(method)(payload, metadata=auth, timeout=10))
            else:
                channel.unary_unary(method)(payload, metadata=auth, timeout=10)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def check_native(code: grpc.StatusCode, details: str) -> None:
    assert code not in SERVER_FAULTS, (code, details)
    assert not NATIVE_INTERNALS.search(details), details


@pytest.mark.parametrize("scale", SCALES)
def test_native_random_bytes(stack: Stack, scale: int) -> None:
    methods = native_methods()

    def check(case: tuple[int, bytes]) -> None:
        method, streaming, _ = methods[case[0] % len(methods)]
        check_native(*native_outcome(stack, method, streaming, case[1]))

    run(60 * scale, st.tuples(st.integers(min_value=0), st.binary(max_size=80)), check)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Structurally valid messages with hostile contents: every field of the request, wire types as declared,
# values random (strings in any Unicode, huge and negative numbers, NaN, nested messages of random bytes).
def _field_bytes(field: Any, draw: Any, depth: int = 0) -> bytes:
    number, kind = field.number, field.type
    if kind in (field.TYPE_STRING, field.TYPE_BYTES):
        text = draw(st.text(max_size=30)).encode("utf-8", "surrogatepass")
        return _varint(number << 3 | 2) + _varint(len(text)) + text
    if kind == field.TYPE_MESSAGE:
        fields = field.message_type.fields if depth < 6 else ()
        inner = b"".join(_field_bytes(f, draw, depth + 1) for f in fields if draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:
            inner = draw(st.binary(max_size=20))
        return _varint(number << 3 | 2) + _varint(len(inner)) + inner
    if kind in (field.TYPE_DOUBLE,):
        value = draw(st.floats(allow_nan=True, allow_infinity=True, width=64))
        return _varint(number << 3 | 1) + struct.pack("<d", value)
    if kind in (field.TYPE_FLOAT,):
        value = draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    value = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return _varint(number << 3) + _varint(value)


@st.composite
def hostile_message(draw: Any, descriptor: Any) -> bytes:
    return b"".join(_field_bytes(field, draw) for field in descriptor.fields if draw(st.booleans()))


@pytest.mark.parametrize("scale", SCALES)
def test_native_hostile_messages(stack: Stack, scale: int) -> None:
    methods = native_methods()
    strategy = st.integers(0, len(methods) - 1).flatmap(
        lambda index: st.tuples(st.just(index), hostile_message(methods[index][2]))
    )

    def check(case: tuple[int, bytes]) -> None:
        method, streaming, _ = methods[case[0]]
        check_native(*native_outcome(stack, method, streaming, case[1]))

    run(80 * scale, strategy, check)


@pytest.mark.parametrize("scale", SCALES)
def test_the_server_stayed_up_and_its_memory_came_back(stack: Stack, baseline: float, scale: int) -> None:
    """Runs after the properties above (same module): the figures go to the report with -s."""
    assert stack.server is not None and stack.server.poll() is None
    assert _grpc_serving(stack.grpc_target)
    time.sleep(0.5)
    after = rss_mb(stack)
    print(f"\nfuzz ({'long' if scale == LONG else 'quick'}): server RSS {baseline:.0f} MB before, {after:.0f} MB after")
    assert after < baseline + 60, (baseline, after)
