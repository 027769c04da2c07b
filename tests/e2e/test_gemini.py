"""The Gemini surface through Envoy: the google-genai SDK unmodified, exact bytes, errors, native gRPC, usage rows."""

from __future__ import annotations

import base64
import http.client
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from modelway.v1 import gemini_pb2, gemini_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import Reply, request
from tests.fakes import openai as fake_openai
from tests.fakes.server import FakeUpstream, Json, Sse
from tests.real.postgres import connect_db

# google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about (warnings fail tests).
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

GENERATE = "/api/v1beta/models/echo-1:generateContent"
STREAM = "/api/v1beta/models/echo-1:streamGenerateContent?alt=sse"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING), "days": types.Schema(type=types.Type.INTEGER)},
        required=["city", "days"],
    ),
)
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


def sdk(stack: Stack, api_version: str | None, key: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=f"{stack.http_base}/api", api_version=api_version)
    return genai.Client(api_key=key or stack.api_key, http_options=options)


@pytest.fixture(params=[None, "v1beta"], ids=["default-v1", "v1beta"])
def client(request: pytest.FixtureRequest, stack: Stack) -> Iterator[genai.Client]:
    with sdk(stack, request.param) as client:
        yield client


def usage_row(db: Path, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect_db(db) as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def post(stack: Stack, path: str, body: Any, key: str | None = None) -> Reply:
    headers = {} if key == "" else {"x-goog-api-key": key or stack.api_key}
    return request(stack.http_port, "POST", path, body, headers)


def events(body: bytes) -> list[Any]:
    """The JSON of each `data: ...\\r\\n\\r\\n` event; fails on any other framing."""
    assert body.endswith(b"\r\n\r\n"), body
    frames = body[: -len(b"\r\n\r\n")].split(b"\r\n\r\n")
    assert all(frame.startswith(b"data: ") and b"\n" not in frame for frame in frames), body
    return [json.loads(frame[len(b"data: ") :]) for frame in frames]


def assert_gemini_error(reply: Reply, code: int, status: str, reason: str | None = None) -> dict[str, Any]:
    assert reply.status == code, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    assert not [name for name in reply.headers if name.lower().startswith(("grpc-", "x-http-status", "x-error"))]
    error = reply.json()["error"]
    assert set(reply.json()) == {"error"}
    assert {"code", "message", "status"} <= set(error) <= {"code", "message", "status", "details"}
    assert (error["code"], error["status"]) == (code, status)
    assert error["message"]
    if reason is not None:
        assert error["details"][0]["reason"] == reason
    return dict(error)


# --- the google-genai SDK -----------------------------------------------------


def test_sdk_generate_content(client: genai.Client) -> None:
    response = client.models.generate_content(model="echo-1", contents="Hello there")
    assert response.text == "Echo: Hello there"
    [candidate] = response.candidates or []
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content is not None and candidate.content.role == "model"
    usage = response.usage_metadata
    assert usage is not None and usage.candidates_token_count == 4
    assert usage.total_token_count == (usage.prompt_token_count or 0) + 4
    assert response.model_version == "echo-1"
    assert response.response_id


async def test_sdk_async_generate_content(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model="echo-1", contents="async hello", config=types.GenerateContentConfig(max_output_tokens=2)
    )
    assert response.text == "Echo:"
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_sdk_stream(client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model="echo-1", contents="one two three"))
    assert "".join(chunk.text or "" for chunk in chunks) == "Echo: one two three"
    assert len(chunks) >= 5
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == 5
    assert len({chunk.response_id for chunk in chunks}) == 1


async def test_sdk_async_stream(client: genai.Client) -> None:
    stream = await client.aio.models.generate_content_stream(model="echo-1", contents="async stream")
    text = "".join([chunk.text or "" async for chunk in stream])
    assert text == "Echo: async stream"


def test_sdk_system_instruction_reaches_the_model(client: genai.Client) -> None:
    plain = client.models.generate_content(model="echo-1", contents="Hi")
    instructed = client.models.generate_content(
        model="echo-1",
        contents="Hi",
        config=types.GenerateContentConfig(system_instruction="You are a terse assistant who answers in rhyme."),
    )
    assert instructed.text == "Echo: Hi"
    assert plain.usage_metadata and instructed.usage_metadata
    # The instruction is part of the prompt the model was sent.
    assert (instructed.usage_metadata.prompt_token_count or 0) > (plain.usage_metadata.prompt_token_count or 0) + 8


def test_sdk_function_calling_round_trip(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    response = client.models.generate_content(model="echo-1", contents="Use get_weather for Paris", config=config)
    [call] = response.function_calls or []
    assert call.name == "get_weather"
    assert set(call.args or {}) == {"city", "days"}
    assert isinstance((call.args or {})["days"], int)
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    # The call and its result go back as history; the model then answers in text.
    model_turn = response.candidates[0].content
    assert model_turn is not None
    answer = types.Part.from_function_response(name="get_weather", response={"temperature": 21})
    follow_up = client.models.generate_content(
        model="echo-1",
        contents=[
            types.Content(role="user", parts=[types.Part.from_text(text="Use get_weather for Paris")]),
            model_turn,
            types.Content(role="user", parts=[answer, types.Part.from_text(text="Thanks, summarise")]),
        ],
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
            ),
        ),
    )
    assert follow_up.text == "Echo: Thanks, summarise"


def test_sdk_streamed_function_call_arrives_whole(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]
            )
        ),
    )
    chunks = list(client.models.generate_content_stream(model="echo-1", contents="Oslo please", config=config))
    calls = [call for chunk in chunks for call in chunk.function_calls or []]
    assert [call.name for call in calls] == ["get_weather"]
    assert set(calls[0].args or {}) == {"city", "days"}


def test_sdk_json_output_with_a_schema(client: genai.Client) -> None:
    schema = types.Schema(
        type=types.Type.OBJECT,
        properties={"answer": types.Schema(type=types.Type.STRING), "score": types.Schema(type=types.Type.NUMBER)},
        required=["answer", "score"],
    )
    response = client.models.generate_content(
        model="echo-1",
        contents="rate this",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema),
    )
    assert set(json.loads(response.text or "")) == {"answer", "score"}


def test_sdk_models_list_and_get(client: genai.Client) -> None:
    # On its default v1 the SDK asks GET /api/v1/models, OpenAI's path: its x-goog-api-key marks it as Gemini's.
    models = list(client.models.list(config={"page_size": 2}))
    assert [model.name for model in models] == ["models/echo-1", "models/echo-mini", "models/echo-slow"]
    model = client.models.get(model="echo-1")
    assert model.name == "models/echo-1"
    assert model.output_token_limit == 4096
    assert model.supported_actions == ["generateContent", "streamGenerateContent"]
    assert client.models.get(model="models/echo-mini").name == "models/echo-mini"
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.get(model="nope")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


async def test_sdk_async_models_list(client: genai.Client) -> None:
    pager = await client.aio.models.list()
    assert [model.name async for model in pager] == ["models/echo-1", "models/echo-mini", "models/echo-slow"]


def test_models_on_v1_are_gemini_s_for_a_gemini_key_and_openai_s_for_a_bearer_key(stack: Stack) -> None:
    """OpenAI's API takes keys only as `Authorization: Bearer`; x-goog-api-key or ?key= alone is a Gemini caller."""
    goog = {"x-goog-api-key": stack.api_key}
    listed = request(stack.http_port, "GET", "/api/v1/models?pageSize=2&junk=1", None, goog)
    assert listed.status == 200 and listed.headers["content-type"] == "application/json"
    assert [m["name"] for m in listed.json()["models"]] == ["models/echo-1", "models/echo-mini"]
    token = listed.json()["nextPageToken"]
    second = request(stack.http_port, "GET", f"/api/v1/models?pageSize=2&pageToken={token}", None, goog)
    assert [m["name"] for m in second.json()["models"]] == ["models/echo-slow"]
    by_query = request(stack.http_port, "GET", f"/api/v1/models/echo%2D1?key={stack.api_key}", None, {})
    assert by_query.json()["name"] == "models/echo-1"
    # Gemini's errors too: the server's and Envoy's own.
    assert_gemini_error(request(stack.http_port, "GET", "/api/v1/models/nope", None, goog), 404, "NOT_FOUND")
    wrong = request(stack.http_port, "GET", "/api/v1/models", None, {"x-goog-api-key": "mwt-nope"})
    assert_gemini_error(wrong, 401, "UNAUTHENTICATED")
    bad_page = request(stack.http_port, "GET", "/api/v1/models?pageSize=many", None, goog)
    assert_gemini_error(bad_page, 400, "INVALID_ARGUMENT")
    # A Bearer key (every OpenAI client), alone or beside a Google one, and X-API-Key keep OpenAI's list.
    bearer = {"Authorization": f"Bearer {stack.api_key}"}
    for headers in (bearer, {**bearer, **goog}, {"X-API-Key": stack.api_key}):
        openai_list = request(stack.http_port, "GET", "/api/v1/models", None, headers).json()
        assert openai_list["object"] == "list" and openai_list["data"][0]["object"] == "model", headers
        one = request(stack.http_port, "GET", "/api/v1/models/echo-1", None, headers).json()
        assert one == {**one, "id": "echo-1", "object": "model"}
    openai_404 = request(stack.http_port, "GET", "/api/v1/models/nope", None, bearer)
    assert set(openai_404.json()["error"]) == {"message", "type", "param", "code"}


def test_sdk_rate_limit_raises_client_error_429(stack: Stack) -> None:
    account = stack.create_account("gemini-small", plan="small")
    _, key = stack.create_key("gemini-small", account)
    with sdk(stack, None, key=key) as client:
        for _ in range(10):  # the small plan's requests per minute
            client.models.generate_content(model="echo-1", contents="hi")
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model="echo-1", contents="hi")
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert "Rate limit" in (caught.value.message or "")


def test_sdk_unknown_model_is_client_error_404(client: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="no-such-model", contents="hi")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_sdk_bad_key_is_client_error_401(stack: Stack) -> None:
    with sdk(stack, None, key="mwt-wrong") as client, pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="echo-1", contents="hi")
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")


# --- raw HTTP: shapes and bytes ------------------------------------------------


def test_json_answer_shape(stack: Stack) -> None:
    reply = post(stack, GENERATE, {"contents": [{"role": "user", "parts": [{"text": "Hello world"}]}]})
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-ratelimit-limit-requests"]
    body = reply.json()
    assert list(body) == ["candidates", "usageMetadata", "modelVersion", "responseId"]
    assert body["candidates"] == [
        {"content": {"parts": [{"text": "Echo: Hello world"}], "role": "model"}, "finishReason": "STOP", "index": 0}
    ]
    usage = body["usageMetadata"]
    assert list(usage) == ["promptTokenCount", "candidatesTokenCount", "totalTokenCount"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    row = usage_row(stack.db_path, reply.headers["x-request-id"])
    assert (row["surface"], row["status"], row["model"]) == ("gemini", 200, "echo-1")
    assert row["completion_tokens"] == usage["candidatesTokenCount"]


def test_exact_sse_bytes(stack: Stack) -> None:
    reply = post(stack, STREAM, {"contents": [{"parts": [{"text": "a b"}]}]})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    first = events(reply.body)[0]
    rid = first["responseId"]

    def event(value: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\r\n\r\n"

    def piece(text: str) -> bytes:
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        return event({"candidates": [candidate], "modelVersion": "echo-1", "responseId": rid})

    prompt = events(reply.body)[-1]["usageMetadata"]["promptTokenCount"]
    last = {
        "candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": 4, "totalTokenCount": prompt + 4},
        "modelVersion": "echo-1",
        "responseId": rid,
    }
    assert reply.body == piece("Echo") + piece(":") + piece(" a") + piece(" b") + event(last)
    assert b"[DONE]" not in reply.body
    row = usage_row(stack.db_path, reply.headers["x-request-id"])
    assert (row["surface"], row["status"], row["completion_tokens"]) == ("gemini", 200, 4)


def test_stream_ends_only_after_its_usage_row_is_committed(stack: Stack) -> None:
    """Gemini streams have no terminator: the frame with usageMetadata is the last, so the row must be
    durable before it goes out (a client holding the whole answer has a row that survives a crash)."""
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
        try:
            body = json.dumps({"contents": [{"parts": [{"text": "a b c"}]}]})
            headers = {"Content-Type": "application/json", "x-goog-api-key": stack.api_key}
            connection.request("POST", STREAM, body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == 200
            request_id = response.headers["x-request-id"]
            while b"usageMetadata" not in (line := response.readline()):
                assert line, "the stream ended without usageMetadata"
            # Read at once, no waiting: the row is there already.
            with connect_db(stack.db_path) as db:
                row = db.execute("SELECT status, completion_tokens FROM usage WHERE request_id = ?", [request_id])
                assert row.fetchone() == (200, 5)
            response.read()
        finally:
            connection.close()


def test_camel_and_snake_case_give_the_same_answer(stack: Stack) -> None:
    camel = {
        "contents": [
            {"role": "user", "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": PIXEL}}]}
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 3, "temperature": 0.5, "topP": 0.9, "topK": 40, "candidateCount": 2},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    snake = {
        "contents": [
            {"role": "user", "parts": [{"text": "look"}, {"inline_data": {"mime_type": "image/png", "data": PIXEL}}]}
        ],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generation_config": {
            "max_output_tokens": 3,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "candidate_count": 2,
        },
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    answers = [post(stack, GENERATE, body).json() for body in (camel, snake)]
    for answer in answers:
        answer.pop("responseId")
    assert answers[0] == answers[1]
    assert [c["content"]["parts"][0]["text"] for c in answers[0]["candidates"]] == ["Echo: look", "Echo: look"]
    assert [c["finishReason"] for c in answers[0]["candidates"]] == ["MAX_TOKENS", "MAX_TOKENS"]


def test_stop_sequences_and_json_mime_type(stack: Stack) -> None:
    stopped = post(
        stack,
        GENERATE,
        {"contents": [{"parts": [{"text": "alpha beta"}]}], "generationConfig": {"stopSequences": [" beta"]}},
    )
    assert stopped.json()["candidates"][0]["content"]["parts"] == [{"text": "Echo: alpha"}]
    as_json = post(
        stack,
        GENERATE,
        {"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"response_mime_type": "application/json"}},
    )
    assert json.loads(as_json.json()["candidates"][0]["content"]["parts"][0]["text"]) == {"echo": "Echo: x"}


def test_function_call_part_shape(stack: Stack) -> None:
    body = {
        "contents": [{"parts": [{"text": "call get_weather"}]}],
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "get_weather",
                        "parameters_json_schema": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
    }
    candidate = post(stack, GENERATE, body).json()["candidates"][0]
    [part] = candidate["content"]["parts"]
    assert set(part) == {"functionCall"}
    assert set(part["functionCall"]) == {"id", "name", "args"}
    assert part["functionCall"]["name"] == "get_weather"
    assert isinstance(part["functionCall"]["args"]["city"], str)
    assert candidate["finishReason"] == "STOP"


def test_key_in_query(stack: Stack) -> None:
    ok = post(stack, f"{GENERATE}?key={stack.api_key}", {"contents": [{"parts": [{"text": "q"}]}]}, key="")
    assert ok.status == 200
    streamed = post(stack, f"{STREAM}&key={stack.api_key}", {"contents": [{"parts": [{"text": "q"}]}]}, key="")
    assert events(streamed.body)[-1]["candidates"][0]["finishReason"] == "STOP"
    wrong = post(stack, f"{GENERATE}?key=mwt-nope", {"contents": [{"parts": [{"text": "q"}]}]}, key="")
    assert_gemini_error(wrong, 401, "UNAUTHENTICATED", "INVALID_API_KEY")
    v1 = post(
        stack,
        f"/api/v1/models/echo-1:generateContent?key={stack.api_key}",
        {"contents": [{"parts": [{"text": "q"}]}]},
        key="",
    )
    assert v1.status == 200
    models = request(stack.http_port, "GET", f"/api/v1beta/models?key={stack.api_key}")
    assert models.status == 200


def test_key_in_query_is_gemini_only(stack: Stack) -> None:
    """Anywhere else a key in the URL is no credential (URLs are logged): 401 as with no key at all.
    (GET /api/v1/models with ?key= and no Authorization is the google-genai SDK listing Gemini's models.)"""
    chat = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    for method, path, body in (
        ("POST", "/api/v1/chat/completions", chat),
        ("GET", "/api/v1/api-keys", None),
        ("POST", "/api/v1/images/generations", {"prompt": "p"}),
    ):
        reply = request(stack.http_port, method, f"{path}?key={stack.api_key}", body)
        assert reply.status == 401, (path, reply.body)
        assert reply.json()["error"]["code"] == "missing_api_key", (path, reply.body)
    reply = request(stack.http_port, "POST", f"/api/v1/ai/chat?key={stack.api_key}", {"prompt": "hi"})
    assert reply.status == 401 and reply.json()["error"]["code"] == "UNAUTHORIZED"


def test_percent_encoded_model_ids_and_models_prefix(stack: Stack) -> None:
    body = {"contents": [{"parts": [{"text": "q"}]}]}
    for path in ("/api/v1beta/models/ech%6F-1:generateContent", "/api/v1/models/echo%2D1:generateContent"):
        reply = post(stack, path, body)
        assert reply.status == 200, reply.body
        assert reply.json()["modelVersion"] == "echo-1"
    got = request(stack.http_port, "GET", "/api/v1beta/models/echo%2Dmini", None, {"x-goog-api-key": stack.api_key})
    assert got.json()["name"] == "models/echo-mini"


def test_models_list_pages(stack: Stack) -> None:
    headers = {"x-goog-api-key": stack.api_key}
    first = request(stack.http_port, "GET", "/api/v1beta/models?pageSize=2", None, headers).json()
    assert [m["name"] for m in first["models"]] == ["models/echo-1", "models/echo-mini"]
    assert first["models"][0] == {
        "name": "models/echo-1",
        "version": "1",
        "displayName": "echo-1",
        "outputTokenLimit": 4096,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
    }
    token = first["nextPageToken"]
    second = request(stack.http_port, "GET", f"/api/v1beta/models?pageSize=2&pageToken={token}", None, headers).json()
    assert [m["name"] for m in second["models"]] == ["models/echo-slow"]
    assert "nextPageToken" not in second
    bad = request(stack.http_port, "GET", "/api/v1beta/models?pageToken=zzz", None, headers)
    assert_gemini_error(bad, 400, "INVALID_ARGUMENT")
    # Tokens that decode to offsets int() refuses: "²" (a digit to str.isdigit) and 5,000 digits.
    for offset in ("\u00b2", "9" * 5000):
        forged = base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")
        bad = request(stack.http_port, "GET", f"/api/v1beta/models?pageToken={forged}", None, headers)
        assert_gemini_error(bad, 400, "INVALID_ARGUMENT")


# --- errors: every status, the server's and Envoy's own ----------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "contents"),
        ({"contents": []}, "contents"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": 3}},
            "generationConfig.temperature",
        ),
        ({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"top_p": "high"}}, "generationConfig.topP"),
        ({"contents": [{"parts": [{"bogus": 1}]}]}, "contents[0].parts[0]"),
        ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
    ],
)
def test_invalid_argument_names_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    error = assert_gemini_error(post(stack, GENERATE, body), 400, "INVALID_ARGUMENT")
    assert field in error["message"]
    assert error["details"][0]["metadata"]["field"] == field


def test_bad_json_is_invalid_argument(stack: Stack) -> None:
    for path in (GENERATE, STREAM):
        error = assert_gemini_error(post(stack, path, "{not json"), 400, "INVALID_ARGUMENT", "INVALID_BODY")
        assert error["message"].startswith("Invalid JSON payload received.")


def test_missing_key_is_unauthenticated(stack: Stack) -> None:
    assert_gemini_error(post(stack, GENERATE, {"contents": []}, key=""), 401, "UNAUTHENTICATED", "MISSING_API_KEY")


def test_missing_permission_is_permission_denied(stack: Stack) -> None:
    _, key = stack.create_key("gemini-models-only", "", "--permissions", "models.list")
    error = assert_gemini_error(
        post(stack, GENERATE, {"contents": [{"parts": [{"text": "x"}]}]}, key=key), 403, "PERMISSION_DENIED"
    )
    assert "chat.completions" in error["message"]


def test_unknown_model_is_not_found(stack: Stack) -> None:
    reply = post(
        stack, "/api/v1beta/models/nope:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "x"}]}]}
    )
    assert_gemini_error(reply, 404, "NOT_FOUND", "MODEL_NOT_FOUND")
    got = request(stack.http_port, "GET", "/api/v1beta/models/nope", None, {"x-goog-api-key": stack.api_key})
    assert_gemini_error(got, 404, "NOT_FOUND", "MODEL_NOT_FOUND")


def test_envoy_local_replies_are_gemini_shaped(stack: Stack) -> None:
    unknown = request(stack.http_port, "GET", "/api/v1beta/tunedModels", None, {"x-goog-api-key": stack.api_key})
    assert assert_gemini_error(unknown, 404, "NOT_FOUND")["message"] == "Invalid URL (GET /api/v1beta/tunedModels)"
    verb = post(stack, "/api/v1beta/models/echo-1:countTokens", {"contents": []})
    assert_gemini_error(verb, 404, "NOT_FOUND")
    v1_verb = post(stack, "/api/v1/models/echo-1:embedContent", {})
    assert_gemini_error(v1_verb, 404, "NOT_FOUND")
    bad_query = request(stack.http_port, "GET", "/api/v1beta/models?pageSize=many", None, {"x-goog-api-key": "k"})
    assert_gemini_error(bad_query, 400, "INVALID_ARGUMENT")
    # The edge refuses a key with a byte that is not visible ASCII before the server sees it.
    bad_key = request(stack.http_port, "POST", GENERATE, "{}", {"x-goog-api-key": "mwt-\xff"})
    assert_gemini_error(bad_key, 401, "UNAUTHENTICATED")
    # OpenAI's routes keep OpenAI's shape.
    openai_404 = request(stack.http_port, "GET", "/api/v1/nothing", None, {})
    assert set(openai_404.json()["error"]) == {"message", "type", "param", "code"}


# --- upstream failures: 503, and a stream cut after some tokens --------------

UPSTREAM = """
[routing]
retries = 0
backoff_seconds = 0.01

[[providers]]
name = "oai"
kind = "openai"
base_url = "{openai}/v1"

[[models]]
id = "gpt"
provider = "oai"
input_credits_per_1k = 1
output_credits_per_1k = 2
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeUpstream]]:
    fake = fake_openai.start()
    try:
        with running_stack(
            tmp_path_factory.mktemp("gemini-up"), TEST_CONFIG + UPSTREAM.format(openai=fake.base_url)
        ) as stack:
            yield stack, fake
    finally:
        fake.stop()


def test_every_candidate_failing_is_unavailable_with_retry_info(upstream: tuple[Stack, FakeUpstream]) -> None:
    stack, fake = upstream
    fake.script(Json(fake_openai.error_json("overloaded", "server_error"), status=503))
    reply = post(stack, "/api/v1beta/models/gpt:generateContent", {"contents": [{"parts": [{"text": "x"}]}]})
    error = assert_gemini_error(reply, 503, "UNAVAILABLE")
    assert reply.headers["retry-after"]
    assert {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": reply.headers["retry-after"] + "s",
    } in error["details"]


def test_mid_stream_failure_is_an_error_event_and_bills_what_was_sent(upstream: tuple[Stack, FakeUpstream]) -> None:
    stack, fake = upstream
    fake.script(Sse(fake_openai.chat_stream(("one", " two", " three", " four")), cut=4, gap=0.05))
    reply = post(
        stack, "/api/v1beta/models/gpt:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "x"}]}]}
    )
    assert reply.status == 200
    payloads = events(reply.body)
    error = payloads[-1]["error"]
    assert set(error) == {"code", "message", "status", "details"}
    assert error["code"] >= 500 and error["status"] in ("UNAVAILABLE", "INTERNAL")
    text = "".join(p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads[:-1])
    assert text == "one two three"
    row = usage_row(stack.db_path, reply.headers["x-request-id"])
    assert (row["surface"], row["completion_tokens"]) == ("gemini", 3)
    assert row["status"] >= 500 and row["cost"] > 0


def test_sdk_raises_for_the_mid_stream_error_event(upstream: tuple[Stack, FakeUpstream]) -> None:
    stack, fake = upstream
    fake.script(Sse(fake_openai.chat_stream(("one", " two", " three")), cut=3, gap=0.05))
    text = []
    with sdk(stack, "v1beta") as client, pytest.raises(genai_errors.APIError) as caught:
        for chunk in client.models.generate_content_stream(model="gpt", contents="x"):
            text.append(chunk.text or "")
    assert "".join(text) == "one two"
    assert caught.value.code >= 500


# --- the native RPC --------------------------------------------------------------


def native_request(text: str = "Hello native", **config: Any) -> gemini_pb2.GenerateContentRequest:
    return gemini_pb2.GenerateContentRequest(
        model="echo-1",
        contents=[gemini_pb2.GeminiContent(role="user", parts=[gemini_pb2.GeminiPart(text=text)])],
        generation_config=gemini_pb2.GeminiGenerationConfig(**config),
    )


def test_native_generate_content(channel: grpc.Channel, stack: Stack) -> None:
    reply, call = gemini_pb2_grpc.GeminiServiceStub(channel).GenerateContent.with_call(
        native_request(), metadata=[("x-goog-api-key", stack.api_key)], timeout=10
    )
    [candidate] = reply.candidates
    assert [part.text for part in candidate.content.parts] == ["Echo: Hello native"]
    assert (candidate.content.role, candidate.finish_reason, reply.model_version) == ("model", "STOP", "echo-1")
    assert reply.usage_metadata.candidates_token_count == 4
    row = usage_row(stack.db_path, dict(call.initial_metadata())["x-request-id"])
    assert (row["surface"], row["status"]) == ("gemini", 200)


def test_native_stream_generate_content(channel: grpc.Channel, stack: Stack) -> None:
    replies = list(
        gemini_pb2_grpc.GeminiServiceStub(channel).StreamGenerateContent(
            native_request(max_output_tokens=3), metadata=[("authorization", f"Bearer {stack.api_key}")], timeout=10
        )
    )
    text = "".join(part.text for reply in replies for c in reply.candidates for part in c.content.parts)
    assert text == "Echo: Hello"
    assert replies[-1].candidates[0].finish_reason == "MAX_TOKENS"
    assert replies[-1].usage_metadata.candidates_token_count == 3
    assert len({reply.response_id for reply in replies}) == 1


def test_native_function_call(channel: grpc.Channel, stack: Stack) -> None:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "OBJECT", "properties": {"city": {"type": "STRING"}}})
    request = native_request("weather in Rome")
    request.tools.append(
        gemini_pb2.GeminiTool(
            function_declarations=[gemini_pb2.GeminiFunctionDeclaration(name="get_weather", parameters=parameters)]
        )
    )
    request.tool_config.function_calling_config.mode = "ANY"
    reply = gemini_pb2_grpc.GeminiServiceStub(channel).GenerateContent(
        request, metadata=[("x-goog-api-key", stack.api_key)], timeout=10
    )
    [part] = reply.candidates[0].content.parts
    assert part.function_call.name == "get_weather"
    assert isinstance(part.function_call.args["city"], str)


def test_native_errors_are_grpc_statuses_with_error_info(channel: grpc.Channel, stack: Stack) -> None:
    stub = gemini_pb2_grpc.GeminiServiceStub(channel)
    request = native_request()
    request.model = "missing"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GenerateContent(request, metadata=[("x-goog-api-key", stack.api_key)], timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    trailers = dict(caught.value.trailing_metadata())  # type: ignore[attr-defined]
    assert "x-error-json" not in trailers
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "MODEL_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as invalid:
        list(stub.StreamGenerateContent(native_request(temperature=5.0), metadata=[("x-goog-api-key", stack.api_key)]))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as anonymous:
        stub.GenerateContent(native_request(), timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
