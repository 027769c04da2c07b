"""Real upstream adapters end to end: the openai SDK through Envoy, to scripted OpenAI, Anthropic and Gemini fakes."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from modelway.core.types import ToolCall
from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import request
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import gemini as fake_gemini
from tests.fakes import openai as fake_openai
from tests.fakes.server import Cut, FakeUpstream, Hang, Json, Sse
from tests.real.postgres import connect_db

SECRETS = {
    "FAKE_OPENAI_KEY": "sk-upstream-openai",
    "FAKE_ANTHROPIC_KEY": "sk-ant-upstream",
    "FAKE_GEMINI_KEY": "AIza-up",
}

PROVIDERS = """
[routing]
retries = 1
backoff_seconds = 0.01
max_backoff_seconds = 2
breaker_failures = 3
breaker_cooldown_seconds = 1

[[providers]]
name = "oai"
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "FAKE_OPENAI_KEY"
headers = {{ "OpenAI-Organization" = "org-test" }}

[[providers]]
name = "oai-backup"
kind = "openai"
base_url = "{backup}/v1"

[[providers]]
name = "oai-fragile"
kind = "openai"
base_url = "{fragile}/v1"
first_byte_timeout_seconds = 0.5

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "FAKE_ANTHROPIC_KEY"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{gemini}"
api_key_env = "FAKE_GEMINI_KEY"

[[models]]
id = "gpt"
provider = "oai"
upstream_model = "gpt-4o-mini"
input_credits_per_1k = 1
output_credits_per_1k = 2

[[models]]
id = "gpt-flaky"
provider = "oai"
fallbacks = ["gpt-backup"]

[[models]]
id = "gpt-backup"
provider = "oai-backup"

[[models]]
id = "gpt-fragile"
provider = "oai-fragile"

[[models]]
id = "gpt-guided"
provider = "oai"
system_prompt = "Always answer kindly."

[[models]]
id = "gpt-small"
provider = "oai"
context_length = 40

[[models]]
id = "claude"
provider = "claude"
upstream_model = "claude-sonnet-4-5"
max_output_tokens = 1024

[[models]]
id = "gemini"
provider = "gem"
upstream_model = "gemini-2.5-flash"

[aliases]
fast = ["gemini"]
smart = ["claude"]
reason = ["gpt"]
auto = ["fast", "smart", "reason"]
claude-first = ["claude", "gpt"]
"""

KIND_MODELS = ("gpt", "claude", "gemini")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@dataclass
class Upstreams:
    stack: Stack
    openai: FakeUpstream
    backup: FakeUpstream
    fragile: FakeUpstream
    anthropic: FakeUpstream
    gemini: FakeUpstream

    def all(self) -> tuple[FakeUpstream, ...]:
        return (self.openai, self.backup, self.fragile, self.anthropic, self.gemini)

    def for_model(self, model: str) -> FakeUpstream:
        return {"gpt": self.openai, "claude": self.anthropic, "gemini": self.gemini}[model]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Upstreams]:
    fakes = {
        "openai": fake_openai.start(),
        "backup": fake_openai.start(),
        "fragile": fake_openai.start(),
        "anthropic": fake_anthropic.start(),
        "gemini": fake_gemini.start(),
    }
    for name, value in SECRETS.items():
        monkeypatch_module.setenv(name, value)
    config = TEST_CONFIG + PROVIDERS.format(**{name: fake.base_url for name, fake in fakes.items()})
    try:
        with running_stack(tmp_path_factory.mktemp("providers"), config) as stack:
            yield Upstreams(stack=stack, **fakes)
    finally:
        for fake in fakes.values():
            fake.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(autouse=True)
def fresh(upstreams: Upstreams) -> None:
    for fake in upstreams.all():
        fake.reset()


@pytest.fixture
def client(upstreams: Upstreams) -> Iterator[openai.OpenAI]:
    stack = upstreams.stack
    with openai.OpenAI(
        base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0, _strict_response_validation=True
    ) as client:
        yield client


def usage_row(db: Path, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect_db(db) as connection:
            connection.row_factory = sqlite3.Row
            # The answer's X-Request-Id: the gateway's own id.
            row = connection.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def post_chat(stack: Stack, body: dict[str, Any], request_id: str = "") -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    if request_id:
        headers["X-Client-Request-Id"] = request_id
    reply = request(stack.http_port, "POST", "/api/v1/chat/completions", body, headers)
    return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.body


def sse_payloads(body: bytes) -> list[Any]:
    frames = [frame for frame in body.split(b"\n\n") if frame]
    assert all(frame.startswith(b"data: ") for frame in frames), body
    return [frame[6:].decode() if frame == b"data: [DONE]" else json.loads(frame[6:]) for frame in frames]


# --- each wire format, JSON and SSE, through the openai SDK ------------------


@pytest.mark.parametrize("model", KIND_MODELS)
def test_json_answer_from_each_kind(upstreams: Upstreams, client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi there"}])
    assert completion.choices[0].message.content == "Echo: Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 3  # the upstream's own count: "Echo:", "Hi", "there"
    (sent,) = upstreams.for_model(model).requests
    auth = {
        "gpt": ("authorization", "Bearer sk-upstream-openai"),
        "claude": ("x-api-key", "sk-ant-upstream"),
        "gemini": ("x-goog-api-key", "AIza-up"),
    }[model]
    assert sent.headers[auth[0]] == auth[1]


@pytest.mark.parametrize("model", KIND_MODELS)
def test_stream_from_each_kind(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert {c.model for c in chunks} == {model}


@pytest.mark.parametrize("model", KIND_MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_from_each_kind(client: openai.OpenAI, model: str, stream: bool) -> None:
    messages: Any = [{"role": "user", "content": "use the tool for Paris"}]
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {}  # type: ignore[union-attr]
        assert call.id
        return
    chunks = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], stream=True))  # type: ignore[list-item]
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function is not None and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments) == {}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_streamed_tool_arguments_across_chunks_reach_the_caller_whole(
    upstreams: Upstreams, client: openai.OpenAI
) -> None:
    arguments = '{"city": "Paris", "unit": "celsius", "days": 3}'
    call = fake_openai.ToolCall(id="call_abc", name="get_weather", arguments=arguments)
    upstreams.openai.script(Sse(fake_openai.chat_stream((), tool_calls=[call], argument_chunk=5)))
    chunks = list(
        client.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,  # type: ignore[list-item]
        )
    )
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(pieces) > 5
    assert pieces[0].id == "call_abc"
    assert "".join(p.function.arguments or "" for p in pieces if p.function) == arguments


def test_upstream_request_carries_model_headers_and_unknown_parameters(
    upstreams: Upstreams, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
        extra_body={"top_k": 5, "service_tier": "flex", "vendor": {"nested": [1, 2]}},
    )
    (sent,) = upstreams.openai.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["openai-organization"] == "org-test"
    body = sent.json
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.5
    assert (body["top_k"], body["service_tier"], body["vendor"]) == (5, "flex", {"nested": [1, 2]})
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_stream_asks_upstream_for_usage_but_hides_it_when_not_asked(upstreams: Upstreams) -> None:
    status, _, body = post_chat(
        upstreams.stack, {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert status == 200
    (sent,) = upstreams.openai.requests
    assert sent.json["stream_options"] == {"include_usage": True}
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in p for p in payloads[:-1])


# --- errors, retries, fallbacks, breaker, timeouts ---------------------------


def test_upstream_400_is_the_callers_400_with_the_upstreams_words(upstreams: Upstreams, client: openai.OpenAI) -> None:
    upstreams.anthropic.script(
        Json(fake_anthropic.error_json("invalid_request_error", "messages: bad role"), status=400)
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert "messages: bad role" in caught.value.message
    assert len(upstreams.anthropic.requests) == 1  # not retried


def test_upstream_rejecting_our_credentials_is_a_502_without_its_words(upstreams: Upstreams) -> None:
    upstreams.gemini.script(*[Json(fake_gemini.error_json(403, "secret detail", "PERMISSION_DENIED"), status=403)] * 2)
    status, _, body = post_chat(upstreams.stack, {"model": "gemini", "messages": [{"role": "user", "content": "x"}]})
    assert status == 502
    assert b"secret detail" not in body and b"AIza" not in body
    assert json.loads(body)["error"]["type"] == "api_error"


def test_429_with_retry_after_is_retried_after_waiting(upstreams: Upstreams, client: openai.OpenAI) -> None:
    upstreams.openai.script(
        Json(fake_openai.error_json("slow down", "requests"), status=429, headers={"Retry-After": "1"})
    )
    started = time.monotonic()
    completion = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "again"}])
    assert completion.choices[0].message.content == "Echo: again"
    assert len(upstreams.openai.requests) == 2
    assert time.monotonic() - started >= 1.0


def test_failing_model_falls_back_in_order_and_the_answer_names_the_fallback(upstreams: Upstreams) -> None:
    upstreams.openai.script(*[Json(fake_openai.error_json("boom", "server_error"), status=500)] * 2)
    request_id = f"fallback-{uuid.uuid4()}"
    status, headers, body = post_chat(
        upstreams.stack, {"model": "gpt-flaky", "messages": [{"role": "user", "content": "x"}]}, request_id
    )
    assert status == 200, body
    assert json.loads(body)["model"] == "gpt-backup"
    assert len(upstreams.openai.requests) == 2  # the first attempt and one retry
    assert len(upstreams.backup.requests) == 1
    row = usage_row(upstreams.stack.db_path, headers["x-request-id"])
    assert (row["model"], row["provider"], row["status"]) == ("gpt-backup", "oai-backup", 200)


def test_candidate_that_cannot_express_the_request_passes_to_the_next(upstreams: Upstreams) -> None:
    status, _, body = post_chat(
        upstreams.stack, {"model": "claude-first", "n": 2, "messages": [{"role": "user", "content": "two"}]}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model"] == "gpt"
    assert [c["message"]["content"] for c in answer["choices"]] == ["Echo: two", "Echo: two"]
    assert not upstreams.anthropic.requests


def test_when_every_candidate_fails_the_row_names_the_last_one_tried(upstreams: Upstreams) -> None:
    down = Json(fake_openai.error_json("down", "server_error"), status=500)
    upstreams.openai.script(down, down)
    upstreams.backup.script(down, down)
    request_id = f"allfail-{uuid.uuid4()}"
    status, headers, _ = post_chat(
        upstreams.stack, {"model": "gpt-flaky", "messages": [{"role": "user", "content": "x"}]}, request_id
    )
    assert status == 503 and "retry-after" in headers
    row = usage_row(upstreams.stack.db_path, headers["x-request-id"])
    assert (row["model"], row["provider"], row["status"], row["cost"]) == ("gpt-backup", "oai-backup", 503, 0)


def test_provider_order_preference_tries_that_provider_first(upstreams: Upstreams) -> None:
    status, _, body = post_chat(
        upstreams.stack,
        {"model": "gpt-flaky", "provider": {"order": ["oai-backup"]}, "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 200
    assert json.loads(body)["model"] == "gpt-backup"
    assert not upstreams.openai.requests


def test_breaker_opens_skips_then_probes_and_closes(upstreams: Upstreams) -> None:
    fragile = upstreams.fragile
    down = Json(fake_openai.error_json("down", "server_error"), status=503)
    fragile.script(*[down] * 3)
    chat = {"model": "gpt-fragile", "messages": [{"role": "user", "content": "x"}]}
    status, headers, _ = post_chat(upstreams.stack, chat)  # two attempts fail
    assert status == 503 and "retry-after" in headers
    status, _, _ = post_chat(upstreams.stack, chat)  # the third failure opens the breaker
    assert status == 503
    assert len(fragile.requests) == 3
    status, headers, body = post_chat(upstreams.stack, chat)  # open: not even tried
    assert status == 503 and len(fragile.requests) == 3
    assert int(headers["retry-after"]) >= 1
    time.sleep(1.1)
    status, _, body = post_chat(upstreams.stack, chat)  # half-open probe succeeds and closes it
    assert status == 200, body
    assert len(fragile.requests) == 4
    assert post_chat(upstreams.stack, chat)[0] == 200


def test_stream_first_byte_timeout_is_retried_then_503(upstreams: Upstreams) -> None:
    upstreams.fragile.script(Hang(2), Hang(2))
    started = time.monotonic()
    status, _, body = post_chat(
        upstreams.stack, {"model": "gpt-fragile", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 503, body
    assert "timed out" in json.loads(body)["error"]["message"]
    assert time.monotonic() - started < 3
    assert len(upstreams.fragile.requests) == 2
    time.sleep(1.1)  # let the breaker's cool-down pass for the next test


def test_connection_cut_before_any_token_is_retried(upstreams: Upstreams, client: openai.OpenAI) -> None:
    upstreams.anthropic.script(Cut())
    completion = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "retry me"}])
    assert completion.choices[0].message.content == "Echo: retry me"
    assert len(upstreams.anthropic.requests) == 2


def test_mid_stream_failure_ends_with_error_frame_and_done_and_bills_what_was_sent(upstreams: Upstreams) -> None:
    events = fake_openai.chat_stream(("one", " two", " three", " four"))
    # Opener + three pieces, then the connection drops (spaced as tokens are: aiohttp drops what it
    # holds unread when a connection breaks).
    upstreams.openai.script(Sse(events, cut=4, gap=0.05))
    request_id = f"midstream-{uuid.uuid4()}"
    status, headers, body = post_chat(
        upstreams.stack, {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]}, request_id
    )
    assert status == 200
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["type"] == "api_error"
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-2])
    assert text == "one two three"
    assert len(upstreams.openai.requests) == 1  # no retry once tokens were sent
    row = usage_row(upstreams.stack.db_path, headers["x-request-id"])
    assert row["status"] == 502
    assert row["completion_tokens"] == 3
    assert row["cost"] > 0


def test_client_disconnect_closes_the_upstream_connection(upstreams: Upstreams) -> None:
    pieces = [f" w{i}" for i in range(50)]
    upstreams.anthropic.script(Sse(fake_anthropic.chat_stream(pieces), gap=0.1))
    connection = http.client.HTTPConnection("127.0.0.1", upstreams.stack.http_port, timeout=10)
    body = {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    connection.request(
        "POST",
        "/api/v1/chat/completions",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {upstreams.stack.api_key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    received = b""
    while received.count(b"\n\n") < 3:
        received += response.read1(4096)
    left = time.monotonic()
    response.close()
    connection.close()
    deadline = left + 1.0
    while not upstreams.anthropic.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstreams.anthropic.disconnects, "the upstream did not see the connection close within 1 s"
    assert upstreams.anthropic.disconnects[0] - left < 1.0


# --- routing: aliases, auto, system prompts, context length ------------------


@pytest.mark.parametrize(
    ("prompt", "model"),
    [
        ("What is the capital of France?", "gemini"),
        ("Refactor this: ```def f(x): return x```", "claude"),
        ("Prove that the square root of 2 is irrational, step by step.", "gpt"),
    ],
)
def test_auto_picks_a_tier_by_the_request(upstreams: Upstreams, prompt: str, model: str) -> None:
    request_id = f"auto-{uuid.uuid4()}"
    status, headers, body = post_chat(
        upstreams.stack, {"model": "auto", "messages": [{"role": "user", "content": prompt}]}, request_id
    )
    assert status == 200, body
    assert json.loads(body)["model"] == model
    assert len(upstreams.for_model(model).requests) == 1
    assert usage_row(upstreams.stack.db_path, headers["x-request-id"])["model"] == model


def test_alias_resolves_to_its_model(upstreams: Upstreams, client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}]).model == "claude"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "hi"}], [{"role": "system", "content": "Always answer kindly."}]),
        (
            [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}],
            [{"role": "system", "content": "You are terse.\n\nAlways answer kindly."}],
        ),
    ],
)
def test_model_system_prompt_is_injected(
    upstreams: Upstreams, messages: list[dict[str, str]], expected: list[dict[str, str]]
) -> None:
    status, _, _ = post_chat(upstreams.stack, {"model": "gpt-guided", "messages": messages})
    assert status == 200
    (sent,) = upstreams.openai.requests
    assert sent.json["messages"] == [*expected, {"role": "user", "content": "hi"}]


def test_context_length_exceeded_is_refused_before_any_upstream_call(upstreams: Upstreams) -> None:
    words = " ".join(["word"] * 60)
    status, _, body = post_chat(
        upstreams.stack, {"model": "gpt-small", "messages": [{"role": "user", "content": words}]}
    )
    assert status == 400
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "maximum context length is 40 tokens" in error["message"]
    assert not upstreams.openai.requests


# --- native gRPC ----------------------------------------------------------------


@pytest.mark.parametrize("model", KIND_MODELS)
def test_native_grpc_unary_and_stream(upstreams: Upstreams, model: str) -> None:
    metadata = (("authorization", f"Bearer {upstreams.stack.api_key}"),)
    with grpc.insecure_channel(upstreams.stack.envoy_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        message = chat_pb2.ChatMessage(role="user", text="native call")
        request_ = chat_pb2.CreateChatCompletionRequest(model=model, messages=[message])
        reply = stub.CreateChatCompletion(request_, metadata=metadata, timeout=10)
        assert reply.choices[0].message.content == "Echo: native call"
        assert reply.model == model
        chunks = list(stub.StreamChatCompletion(request_, metadata=metadata, timeout=10))
        assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Echo: native call"
        assert chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        # The gateway counts 7 prompt tokens (3 to prime the reply, 3 per message, "x") and 4 in the answer.
        (None, (7, 4)),  # no usage: both counted by the gateway
        ({"prompt_tokens": 21, "completion_tokens": 0, "total_tokens": 21}, (21, 4)),  # a count left out is ours
        ({"prompt_tokens": 21, "completion_tokens": 17, "total_tokens": 38}, (21, 17)),  # the upstream's word
    ],
)
def test_whole_answer_usage_is_the_upstreams_count_or_ours_where_it_gave_none(
    upstreams: Upstreams, reported: dict[str, int] | None, expected: tuple[int, int]
) -> None:
    answer = fake_openai.chat_json("one two three four", usage=None)
    if reported is not None:
        answer["usage"] = reported
    upstreams.openai.script(Json(answer))
    status, headers, body = post_chat(upstreams.stack, {"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200, body
    usage = json.loads(body)["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == expected
    row = usage_row(upstreams.stack.db_path, headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == expected


def test_native_grpc_stream_sends_what_arrived_together_as_one_chunk_per_choice(upstreams: Upstreams) -> None:
    # Two reads: the opener and text pieces in one, after a pause the tool call, finish and usage in another.
    events = fake_openai.chat_stream(
        ("Let", " me", " check."),
        tool_calls=[ToolCall(id="call_w1", name="get_weather", arguments='{"city": "Paris"}')],
        usage=(11, 9),
        argument_chunk=4,
    )
    first_read, second_read = events[:4], events[4:]
    upstreams.openai.script(Sse([fake_openai.sse_bytes(first_read), fake_openai.sse_bytes(second_read)], gap=0.3))
    metadata = (("authorization", f"Bearer {upstreams.stack.api_key}"),)
    with grpc.insecure_channel(upstreams.stack.envoy_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request_ = chat_pb2.CreateChatCompletionRequest(
            model="gpt", messages=[chat_pb2.ChatMessage(role="user", text="weather?")], stream=True
        )
        call = stub.StreamChatCompletion(request_, metadata=metadata, timeout=10)
        chunks = list(call)
        request_id = str(dict(call.initial_metadata())["x-request-id"])
    # One chunk per read (the text; the whole tool call with the finish), then the usage chunk.
    assert len(chunks) == 3
    text, tools, usage = chunks
    assert (text.choices[0].delta.role, text.choices[0].delta.content) == ("assistant", "Let me check.")
    assert text.choices[0].finish_reason == ""
    assert tools.choices[0].delta.role == "" and not tools.choices[0].delta.HasField("content")
    (call_delta,) = tools.choices[0].delta.tool_calls
    assert (call_delta.index, call_delta.id, call_delta.type) == (0, "call_w1", "function")
    assert (call_delta.function.name, call_delta.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert tools.choices[0].finish_reason == "tool_calls"
    assert not usage.choices and (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (11, 9)
    row = usage_row(upstreams.stack.db_path, request_id)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, 11, 9)


def test_native_grpc_upstream_rejection_is_invalid_argument_without_http_trailers(upstreams: Upstreams) -> None:
    upstreams.openai.script(Json(fake_openai.error_json("bad request upstream"), status=400))
    metadata = (("authorization", f"Bearer {upstreams.stack.api_key}"),)
    with grpc.insecure_channel(upstreams.stack.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request_ = chat_pb2.CreateChatCompletionRequest(
            model="gpt", messages=[chat_pb2.ChatMessage(role="user", text="x")]
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateChatCompletion(request_, metadata=metadata, timeout=10)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad request upstream" in error.details()
    trailers = dict(error.trailing_metadata())
    assert "x-http-status" not in trailers and "x-error-json" not in trailers


# --- Gemini's topK reaches the upstreams that take it --------------------------


@pytest.mark.parametrize("model", KIND_MODELS)
def test_gemini_top_k_reaches_the_upstreams_that_take_it(upstreams: Upstreams, model: str) -> None:
    stack = upstreams.stack
    body = {"contents": [{"parts": [{"text": "Hi"}]}], "generationConfig": {"topK": 7, "topP": 0.5}}
    reply = request(
        stack.http_port, "POST", f"/api/v1beta/models/{model}:generateContent", body, {"x-goog-api-key": stack.api_key}
    )
    assert reply.status == 200, reply.body
    (sent,) = upstreams.for_model(model).requests
    if model == "gemini":
        config = sent.json["generationConfig"]
        assert (config["topK"], config["topP"]) == (7, 0.5)
    elif model == "claude":
        assert (sent.json["top_k"], sent.json["top_p"]) == (7, 0.5)
    else:
        # Chat Completions has no top_k (OpenAI refuses one): left out, the rest of the config kept.
        assert "top_k" not in sent.json and "topK" not in sent.json and sent.json["top_p"] == 0.5


@pytest.mark.parametrize("model", ("claude", "gemini"))
def test_an_openai_callers_top_k_reaches_anthropic_and_gemini(
    upstreams: Upstreams, client: openai.OpenAI, model: str
) -> None:
    """OpenAI SDK users send top_k through extra_body (Chat Completions has none): the upstreams that take
    one get it in their own words."""
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], top_p=0.5, extra_body={"top_k": 7}
    )
    (sent,) = upstreams.for_model(model).requests
    if model == "gemini":
        config = sent.json["generationConfig"]
        assert (config["topK"], config["topP"]) == (7, 0.5)
    else:
        assert (sent.json["top_k"], sent.json["top_p"]) == (7, 0.5)


@pytest.mark.parametrize(("top_k", "expected"), [(0, "integer_below_min_value"), ("5", "invalid_type")])
def test_a_bad_top_k_is_refused_in_openais_words(upstreams: Upstreams, top_k: object, expected: str) -> None:
    stack = upstreams.stack
    body = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], "top_k": top_k}
    reply = request(
        stack.http_port, "POST", "/api/v1/chat/completions", body, {"Authorization": f"Bearer {stack.api_key}"}
    )
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("top_k", expected), error
    assert not upstreams.anthropic.requests
