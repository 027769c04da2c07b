"""The gateway-native API through the real Envoy and server: /api/v1/ai/chat, /generate, /embed and GenerateService.

Raw HTTP, so every status, header and byte is what a client sees; an OpenAI
fake upstream for what reaches the provider and for failures.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from modelway.v1 import generate_pb2, generate_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import Reply, request
from tests.fakes import openai as fake_openai
from tests.fakes.server import FakeUpstream, Json, Sse
from tests.real.postgres import connect_db

NATIVE = """
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
max_output_tokens = 64
input_credits_per_1k = 1
output_credits_per_1k = 2

[[providers]]
name = "oai-slow"
kind = "openai"
base_url = "{openai}/v1"
first_byte_timeout_seconds = 0.3

[[models]]
id = "gpt-slow"
provider = "oai-slow"
upstream_model = "gpt"

[aliases]
auto = ["echo-mini", "echo-1"]
"""

CHAT = "/api/v1/ai/chat"
GENERATE = "/api/v1/ai/generate"
EMBED = "/api/v1/ai/embed"
USAGE_KEYS = ["input_tokens", "output_tokens", "total_tokens", "credits_used", "credits_remaining"]


@dataclass
class Native:
    stack: Stack
    openai: FakeUpstream

    def key(self, credits: float = 10.0, plan: str = "tester", *options: str) -> str:
        """A key of a fresh account holding `credits`, so its balance after a call is known exactly."""
        account = self.stack.create_account(f"native-{time.monotonic_ns()}", plan, credits)
        return self.stack.create_key("native", account, *options)[1]

    def post(self, path: str, body: Any, key: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        auth = {} if key == "" else {"Authorization": f"Bearer {key or self.stack.api_key}"}
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        reply = request(self.stack.http_port, "POST", path, raw, {**auth, **(headers or {})})
        # Every answer, whatever it is, carries the call's id.
        assert reply.headers.get("X-Request-Id"), (reply.status, reply.body)
        return reply


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Native]:
    openai = fake_openai.start()
    try:
        config = TEST_CONFIG + NATIVE.format(openai=openai.base_url)
        with running_stack(tmp_path_factory.mktemp("native"), config) as stack:
            yield Native(stack, openai)
    finally:
        openai.stop()


@pytest.fixture(autouse=True)
def fresh(native: Native) -> None:
    native.openai.reset()


def usage_row(db: Path, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect_db(db) as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None and row["status"] != 0:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def error_of(reply: Reply, status: int, code: str) -> str:
    """The message of an error reply, after checking its status and exact shape."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["error"] and list(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert message
    return message


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- answers: exact JSON and SSE bytes -------------------------------------------------------------


def test_chat_json_answer_exact_bytes_and_usage_row(native: Native) -> None:
    key = native.key(credits=10)
    reply = native.post(CHAT, {"model": "echo-1", "messages": [{"role": "user", "content": "Hello there"}]}, key)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    # echo-1 costs 1 credit per 1k input and 2 per 1k output tokens: (8 * 1 + 4 * 2) / 1000.
    usage = {
        "input_tokens": 8,
        "output_tokens": 4,
        "total_tokens": 12,
        "credits_used": 0.016,
        "credits_remaining": 9.984,
    }
    assert reply.body == compact(
        {"content": "Echo: Hello there", "model": "echo-1", "usage": usage, "finishReason": "end_turn"}
    )
    row = usage_row(native.stack.db_path, reply.headers["X-Request-Id"])
    assert (row["surface"], row["status"], row["model"]) == ("native", 200, "echo-1")
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost"]) == (8, 4, 16_000)


def test_generate_sse_exact_bytes(native: Native) -> None:
    key = native.key(credits=10)
    reply = native.post(GENERATE, {"model": "echo-1", "prompt": "Hi you", "stream": True}, key)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/event-stream"
    usage = {
        "input_tokens": 8,
        "output_tokens": 4,
        "total_tokens": 12,
        "credits_used": 0.016,
        "credits_remaining": 9.984,
    }
    assert reply.body == (
        b'data: {"text":"Echo"}\n\n'
        b'data: {"text":":"}\n\n'
        b'data: {"text":" Hi"}\n\n'
        b'data: {"text":" you"}\n\n'
        b"data: " + compact({"usage": usage, "finishReason": "end_turn"}) + b"\n\n"
        b"data: [DONE]\n\n"
    )
    row = usage_row(native.stack.db_path, reply.headers["X-Request-Id"])
    assert (row["surface"], row["status"], row["cost"]) == ("native", 200, 16_000)


def test_chat_stream_and_generate_json(native: Native) -> None:
    reply = native.post(CHAT, {"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "a b"}]})
    frames = [frame for frame in reply.body.split(b"\n\n") if frame]
    assert [json.loads(f[6:])["text"] for f in frames[:-2]] == ["Echo", ":", " a", " b"]
    last = json.loads(frames[-2][6:])
    assert list(last) == ["usage", "finishReason"] and list(last["usage"]) == USAGE_KEYS
    assert frames[-1] == b"data: [DONE]"
    reply = native.post(GENERATE, {"model": "echo-1", "prompt": "one two"})
    body = reply.json()
    assert list(body) == ["content", "model", "usage", "finishReason"]
    assert body["content"] == "Echo: one two" and list(body["usage"]) == USAGE_KEYS


def test_model_defaults_to_auto(native: Native) -> None:
    # auto = [echo-mini, echo-1]: a simple prompt takes the first tier.
    reply = native.post(GENERATE, {"prompt": "hi"})
    assert reply.status == 200 and reply.json()["model"] == "echo-mini"
    assert usage_row(native.stack.db_path, reply.headers["X-Request-Id"])["model"] == "echo-mini"
    reply = native.post(CHAT, {"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.json()["model"] == "echo-mini"


def test_system_field_and_system_message_reach_the_upstream(native: Native) -> None:
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "Hi", "system": "Be brief."})
    assert reply.status == 200 and reply.json()["content"] == "Echo: Hi"
    assert native.openai.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    reply = native.post(CHAT, {"model": "gpt", "system": "Be kind.", "messages": history})
    assert reply.status == 200
    assert native.openai.requests[-1].json["messages"] == [{"role": "system", "content": "Be kind."}, *history]
    reply = native.post(CHAT, {"model": "gpt", "messages": [{"role": "system", "content": "S"}, *history]})
    assert reply.status == 200
    assert native.openai.requests[-1].json["messages"][0] == {"role": "system", "content": "S"}
    both = native.post(CHAT, {"system": "x", "messages": [{"role": "system", "content": "y"}, *history]})
    assert "not both" in error_of(both, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("temperature", [0, 1.5, 2])
def test_temperature_in_range_reaches_the_upstream(native: Native, temperature: float) -> None:
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "Hi", "temperature": temperature})
    assert reply.status == 200
    assert native.openai.requests[-1].json["temperature"] == temperature


@pytest.mark.parametrize("temperature", [-0.1, 2.01, 100, "hot", True])
def test_temperature_out_of_range_or_wrong_type(native: Native, temperature: Any) -> None:
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "Hi", "temperature": temperature})
    assert "`temperature`" in error_of(reply, 400, "VALIDATION_ERROR")
    assert not native.openai.requests


def test_max_tokens_above_the_model_cap_is_clamped_not_refused(native: Native) -> None:
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "Hi", "max_tokens": 10_000_000})
    assert reply.status == 200
    assert native.openai.requests[-1].json["max_tokens"] == 64  # gpt's max_output_tokens
    # echo-mini stops at its cap of 8 tokens: the answer says why it ended.
    reply = native.post(GENERATE, {"model": "echo-mini", "prompt": "w " * 50, "max_tokens": 1_000_000})
    body = reply.json()
    assert reply.status == 200 and body["usage"]["output_tokens"] == 8 and body["finishReason"] == "max_tokens"
    reply = native.post(GENERATE, {"model": "echo-1", "prompt": "a b c d e", "max_tokens": 2})
    assert reply.json()["usage"]["output_tokens"] == 2 and reply.json()["finishReason"] == "max_tokens"


@pytest.mark.parametrize("max_tokens", [0, -5, 1.5, "ten"])
def test_max_tokens_below_one_or_not_an_integer(native: Native, max_tokens: Any) -> None:
    reply = native.post(GENERATE, {"prompt": "Hi", "max_tokens": max_tokens})
    assert "`max_tokens`" in error_of(reply, 400, "VALIDATION_ERROR")


def test_prompt_cap_is_500000_characters(native: Native) -> None:
    reply = native.post(GENERATE, {"prompt": "a" * 500_001})
    message = error_of(reply, 400, "INPUT_TOO_LARGE")
    assert "500,000" in message and "500,001" in message
    reply = native.post(CHAT, {"messages": [{"role": "user", "content": "a" * 300_000}] * 2})
    assert "500,000" in error_of(reply, 400, "INPUT_TOO_LARGE")
    # Under the character cap, the plan's token cap (100,000 for this plan) still holds, in the same code.
    reply = native.post(GENERATE, {"prompt": "word " * 100_000})
    assert "input tokens" in error_of(reply, 400, "INPUT_TOO_LARGE")


# --- every error code, its status and headers ---------------------------------------------------------


@pytest.mark.parametrize("body", [b"{bad", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_invalid_body(native: Native, body: bytes) -> None:
    assert error_of(native.post(CHAT, body), 400, "INVALID_BODY")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (CHAT, {}, "`messages`"),
        (CHAT, {"messages": []}, "`messages`"),
        (CHAT, {"messages": "hi"}, "`messages`"),
        (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "`messages[0].role`"),
        (CHAT, {"messages": [{"role": "user"}]}, "`messages[0].content`"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "`messages[0].content`"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "`stream`"),
        (GENERATE, {}, "`prompt`"),
        (GENERATE, {"prompt": ""}, "`prompt`"),
        (GENERATE, {"prompt": ["x"]}, "`prompt`"),
        (GENERATE, {"prompt": "x", "model": 7}, "`model`"),
        (GENERATE, {"prompt": "x", "system": {}}, "`system`"),
    ],
)
def test_validation_errors_name_the_field(native: Native, path: str, body: Any, field: str) -> None:
    assert field in error_of(native.post(path, body), 400, "VALIDATION_ERROR")


def test_invalid_model(native: Native) -> None:
    assert "`nope`" in error_of(native.post(GENERATE, {"prompt": "x", "model": "nope"}), 400, "INVALID_MODEL")


def test_unauthorized_and_forbidden(native: Native) -> None:
    error_of(native.post(CHAT, {"messages": [{"role": "user", "content": "x"}]}, key=""), 401, "UNAUTHORIZED")
    error_of(native.post(GENERATE, {"prompt": "x"}, key="mwt-wrong"), 401, "UNAUTHORIZED")
    account = native.stack.create_account("native-models-only", "tester", 10)
    _, models_only = native.stack.create_key("models", account, "--permissions", "models.list")
    assert "chat.completions" in error_of(native.post(GENERATE, {"prompt": "x"}, models_only), 403, "FORBIDDEN")


def test_insufficient_credits_is_402(native: Native) -> None:
    reply = native.post(GENERATE, {"model": "echo-1", "prompt": "x"}, native.key(credits=0))
    error_of(reply, 402, "INSUFFICIENT_CREDITS")


def test_rate_limited_is_429_with_retry_after(native: Native) -> None:
    key = native.key(10, "tester", "--rate-limit", "1")
    assert native.post(GENERATE, {"prompt": "x"}, key).status == 200
    reply = native.post(GENERATE, {"prompt": "x"}, key)
    error_of(reply, 429, "RATE_LIMITED")
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.headers["X-RateLimit-Limit-Requests"] == "1"


def test_budget_exceeded_is_429_with_retry_after(native: Native) -> None:
    # A day of 5 tokens: the first call spends it (a call is admitted while some is left), the next is refused.
    key = native.key(10, "tester", "--daily-token-budget", "5")
    assert native.post(GENERATE, {"model": "echo-1", "prompt": "x"}, key).status == 200
    reply = native.post(GENERATE, {"model": "echo-1", "prompt": "x"}, key)
    assert "daily budget" in error_of(reply, 429, "BUDGET_EXCEEDED")
    assert int(reply.headers["Retry-After"]) >= 1


def test_provider_error_is_502(native: Native) -> None:
    # The upstream refuses our credentials: the caller's call is not at fault, and nothing is echoed.
    native.openai.script(Json(fake_openai.error_json("Incorrect API key provided"), status=401))
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "x"})
    assert "Incorrect" not in error_of(reply, 502, "PROVIDER_ERROR")
    assert usage_row(native.stack.db_path, reply.headers["X-Request-Id"])["cost"] == 0


def test_an_upstream_timeout_is_recorded_as_502_provider_error(native: Native) -> None:
    # The API documents no timeout code: an upstream that stalls is the provider's failure (502 PROVIDER_ERROR).
    # A stream that stalls after its first piece (reads wait 0.3 s at most): an error frame, and a 502 row.
    events = fake_openai.chat_stream(("one", " two"))
    native.openai.script(Sse([fake_openai.sse_bytes(events[:2]), *events[2:]], gap=1.0))
    reply = native.post(GENERATE, {"model": "gpt-slow", "prompt": "x", "stream": True})
    assert reply.status == 200
    frames = [frame for frame in reply.body.split(b"\n\n") if frame]
    assert frames[-1] == b"data: [DONE]"
    assert "timed out" in json.loads(frames[-2][6:])["error"]
    row = usage_row(native.stack.db_path, reply.headers["X-Request-Id"])
    assert (row["status"], row["error_code"]) == (502, "upstream_timeout")


def test_service_unavailable_is_503_with_retry_after(native: Native) -> None:
    native.openai.script(Json(fake_openai.error_json("overloaded", "server_error"), status=503))
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "x"})
    error_of(reply, 503, "SERVICE_UNAVAILABLE")
    assert int(reply.headers["Retry-After"]) >= 1


def test_embed_is_not_implemented_after_admission_and_is_recorded(native: Native) -> None:
    reply = native.post(EMBED, {"input": "x"})
    assert "embedding" in error_of(reply, 501, "NOT_IMPLEMENTED")
    row = usage_row(native.stack.db_path, reply.headers["X-Request-Id"])
    assert (row["surface"], row["status"], row["cost"]) == ("native", 501, 0)
    # The key is checked, permitted and counted like any model call's before the 501.
    error_of(native.post(EMBED, {"input": "x"}, key=""), 401, "UNAUTHORIZED")
    error_of(native.post(EMBED, {"input": "x"}, key="mwt-wrong"), 401, "UNAUTHORIZED")
    account = native.stack.create_account("native-embed-models-only", "tester", 10)
    _, models_only = native.stack.create_key("models", account, "--permissions", "models.list")
    error_of(native.post(EMBED, {"input": "x"}, models_only), 403, "FORBIDDEN")
    limited = native.key(10, "tester", "--rate-limit", "1")
    error_of(native.post(EMBED, {"input": "x"}, limited), 501, "NOT_IMPLEMENTED")
    error_of(native.post(EMBED, {"input": "x"}, limited), 429, "RATE_LIMITED")


def test_mid_stream_failure_ends_with_error_frame_and_done_and_bills_what_was_sent(native: Native) -> None:
    events = fake_openai.chat_stream(("one", " two", " three", " four"))
    # Opener + three pieces, then the connection drops.
    native.openai.script(Sse(events, cut=4, gap=0.05))
    reply = native.post(GENERATE, {"model": "gpt", "prompt": "x", "stream": True})
    assert reply.status == 200
    frames = [frame for frame in reply.body.split(b"\n\n") if frame]
    assert frames[-1] == b"data: [DONE]"
    error = json.loads(frames[-2][6:])
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]
    # The opener carries no text and shows nothing: only the pieces come out.
    assert b"".join(frames[:-2]) == b'data: {"text":"one"}data: {"text":" two"}data: {"text":" three"}'
    assert len(native.openai.requests) == 1  # no retry once tokens were sent
    row = usage_row(native.stack.db_path, reply.headers["X-Request-Id"])
    assert (row["surface"], row["status"], row["completion_tokens"]) == ("native", 502, 3)
    assert row["cost"] > 0


# --- Envoy's own replies on /api/v1/ai/ ----------------------------------------------------------------


def test_envoy_replies_in_the_native_shape(native: Native) -> None:
    port = native.stack.http_port
    reply = request(port, "GET", CHAT)
    assert "GET /api/v1/ai/chat" in error_of(reply, 404, "NOT_FOUND") and reply.headers["X-Request-Id"]
    reply = request(port, "POST", "/api/v1/ai/nothing", b"{}")
    error_of(reply, 404, "NOT_FOUND")
    reply = request(port, "POST", CHAT, b"x" * (17 * 1024 * 1024))
    assert "16 MiB" in error_of(reply, 413, "INPUT_TOO_LARGE") and reply.headers["X-Request-Id"]
    reply = request(port, "POST", CHAT, b"{}", {"X-Long": "v" * 9000})
    error_of(reply, 431, "INPUT_TOO_LARGE")
    # The OpenAI routes keep their own shape.
    assert request(port, "GET", "/api/v1/chat/completions").json()["error"]["type"] == "invalid_request_error"


# --- the typed GenerateService, straight and through Envoy ---------------------------------------------


@pytest.fixture(params=["direct", "envoy"])
def generate_stub(request: pytest.FixtureRequest, native: Native) -> Iterator[generate_pb2_grpc.GenerateServiceStub]:
    stack = native.stack
    with grpc.insecure_channel(stack.grpc_target if request.param == "direct" else stack.envoy_target) as channel:
        yield generate_pb2_grpc.GenerateServiceStub(channel)


def test_typed_generate(native: Native, generate_stub: generate_pb2_grpc.GenerateServiceStub) -> None:
    key = native.key(credits=10)
    answer, call = generate_stub.Generate.with_call(
        generate_pb2.GenerateRequest(model="echo-1", prompt="Hello there"),
        metadata=[("authorization", f"Bearer {key}")],
    )
    assert (answer.content, answer.model, answer.finish_reason) == ("Echo: Hello there", "echo-1", "end_turn")
    usage = answer.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (8, 4, 12)
    assert (usage.credits_used, usage.credits_remaining) == (0.016, 9.984)
    request_id = dict(call.initial_metadata())["x-request-id"]
    # Its own name: apart from ChatService's "grpc" rows.
    assert usage_row(native.stack.db_path, request_id)["surface"] == "grpc-generate"


def test_typed_generate_with_messages_system_and_options(
    native: Native, generate_stub: generate_pb2_grpc.GenerateServiceStub
) -> None:
    request_message = generate_pb2.GenerateRequest(
        model="gpt",
        system="Be brief.",
        messages=generate_pb2.GenerateMessages(messages=[generate_pb2.GenerateMessage(role="user", content="Hi")]),
        options=generate_pb2.GenerateOptions(temperature=0.5, max_tokens=1_000_000),
    )
    answer = generate_stub.Generate(request_message, metadata=[("authorization", f"Bearer {native.stack.api_key}")])
    assert answer.content == "Echo: Hi"
    sent = native.openai.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["temperature"], sent["max_tokens"]) == (0.5, 64)


def test_typed_stream_generate(native: Native, generate_stub: generate_pb2_grpc.GenerateServiceStub) -> None:
    key = native.key(credits=10)
    stream = generate_stub.StreamGenerate(
        generate_pb2.GenerateRequest(model="echo-1", prompt="Hi you"), metadata=[("authorization", f"Bearer {key}")]
    )
    replies = list(stream)
    request_id = dict(stream.initial_metadata())["x-request-id"]
    assert usage_row(native.stack.db_path, request_id)["surface"] == "grpc-generate"
    assert [r.text for r in replies[:-1]] == ["Echo", ":", " Hi", " you"]
    summary = replies[-1].summary
    assert (summary.model, summary.finish_reason) == ("echo-1", "end_turn")
    assert (summary.usage.output_tokens, summary.usage.credits_used, summary.usage.credits_remaining) == (
        4,
        0.016,
        9.984,
    )


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (generate_pb2.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_REQUIRED_PARAMETER"),
        (
            generate_pb2.GenerateRequest(prompt="x", options=generate_pb2.GenerateOptions(temperature=3)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "DECIMAL_ABOVE_MAX",
        ),
        (generate_pb2.GenerateRequest(prompt="x", model="nope"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
    ],
)
def test_typed_errors_carry_status_and_reason(
    native: Native,
    generate_stub: generate_pb2_grpc.GenerateServiceStub,
    message: generate_pb2.GenerateRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    for call in (generate_stub.Generate, lambda m, **kw: list(generate_stub.StreamGenerate(m, **kw))):
        with pytest.raises(grpc.RpcError) as raised:
            call(message, metadata=[("authorization", f"Bearer {native.stack.api_key}")])
        error: Any = raised.value
        assert error.code() == code
        details = dict(error.trailing_metadata())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        info = error_details_pb2.ErrorInfo()
        status.details[0].Unpack(info)
        assert info.reason == reason


# --- last: the server down --------------------------------------------------------------------------------


def test_server_down_is_503_service_unavailable_with_retry_after_60(native: Native) -> None:
    stack = native.stack
    stack.stop_server()
    try:
        reply = request(stack.http_port, "POST", CHAT, b"{}", {"Authorization": f"Bearer {stack.api_key}"})
        error_of(reply, 503, "SERVICE_UNAVAILABLE")
        assert reply.headers["Retry-After"] == "60" and reply.headers["X-Request-Id"]
    finally:
        stack.start_server()
    assert native.post(GENERATE, {"prompt": "back"}).status == 200
