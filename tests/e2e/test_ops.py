"""Operations as an operator sees them: /metrics scraped over HTTP after real calls through Envoy,
/healthz and /readyz (also while draining), gRPC health, and the JSON log lines of the server process."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import Reply, request
from tests.fakes import openai as fake_openai
from tests.fakes.server import FakeUpstream, Json
from tests.real.postgres import connect_db

CHAT = "/api/v1/chat/completions"

FLAKY = """
[routing]
retries = 0
breaker_failures = 1
breaker_cooldown_seconds = 1

[[providers]]
name = "flaky"
kind = "openai"
base_url = "{base}/v1"

[[models]]
id = "flaky-1"
provider = "flaky"
input_credits_per_1k = 1
output_credits_per_1k = 2
"""

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    samples: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))


@dataclass
class Ops:
    stack: Stack
    upstream: FakeUpstream

    @property
    def port(self) -> int:
        return int(self.stack.env["MODELWAY_OPS_PORT"])

    def get(self, path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.headers["content-type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["content-type"], error.read()

    def scrape(self) -> Scrape:
        status, content_type, body = self.get("/metrics")
        assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
        assert b"_created" not in body  # one series per figure, not a second of creation times
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return Scrape(samples)

    def settled(self) -> Scrape:
        """A scrape once every recorded row is committed (the queue gauge reads 0)."""
        deadline = time.monotonic() + 5
        while True:
            scrape = self.scrape()
            if scrape.value("modelway_usage_queue_depth") == 0 or time.monotonic() > deadline:
                return scrape
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    upstream = fake_openai.start()
    try:
        with running_stack(tmp_path_factory.mktemp("ops"), TEST_CONFIG + FLAKY.format(base=upstream.base_url)) as st:
            yield Ops(st, upstream)
    finally:
        upstream.stop()


def chat(stack: Stack, key: str, model: str = "echo-1", stream: bool = False, text: str = "Hello ops") -> Reply:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    return request(stack.http_port, "POST", CHAT, body, {"Authorization": f"Bearer {key}"})


def rows(db: Path, request_ids: list[str]) -> list[dict[str, Any]]:
    """The usage rows of these calls, once all are committed."""
    deadline = time.monotonic() + 5
    while True:
        with connect_db(db) as connection:
            connection.row_factory = sqlite3.Row
            marks = ",".join("?" * len(request_ids))
            found = connection.execute(f"SELECT * FROM usage WHERE request_id IN ({marks})", request_ids).fetchall()
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            assert len(found) == len(request_ids), (len(found), len(request_ids))
            return [dict(row) for row in found]
        time.sleep(0.05)


def grpc_auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def hello_proto(text: str) -> chat_pb2.CreateChatCompletionRequest:
    return chat_pb2.CreateChatCompletionRequest(model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text=text)])


def test_metrics_move_by_what_the_calls_did(ops: Ops) -> None:
    stack = ops.stack
    before = ops.settled()
    ids: list[str] = []
    for _ in range(3):
        reply = chat(stack, stack.api_key)
        assert reply.status == 200, reply.body
        ids.append(reply.headers["x-request-id"])
    for _ in range(2):
        reply = chat(stack, stack.api_key, stream=True)
        assert reply.status == 200 and reply.body.endswith(b"data: [DONE]\n\n"), reply.body
        ids.append(reply.headers["x-request-id"])
    with grpc.insecure_channel(stack.envoy_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        _, call = stub.CreateChatCompletion.with_call(hello_proto("Hi native"), metadata=grpc_auth(stack.api_key))
        ids.append(dict(call.initial_metadata())["x-request-id"])
        streamed = stub.StreamChatCompletion(hello_proto("Hi native stream"), metadata=grpc_auth(stack.api_key))
        assert list(streamed)
        ids.append(dict(streamed.initial_metadata())["x-request-id"])
    assert chat(stack, stack.api_key, model="no-such-model").status == 404
    assert chat(stack, stack.api_key + "x").status == 401
    used = rows(stack.db_path, ids)
    after = ops.settled()

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    echo = {"model": "echo-1", "provider": "echo", "status": "200"}
    assert moved("modelway_requests_total", surface="openai", **echo) == 5
    assert moved("modelway_requests_total", surface="grpc", **echo) == 2
    # A model the catalog does not know is never a label value: the row names no model.
    assert moved("modelway_requests_total", surface="openai", model="", provider="", status="404") == 1
    assert moved("modelway_requests_total", surface="openai", model="", provider="", status="401") == 1
    assert not [labels for name, labels in after.samples if ("model", "no-such-model") in labels]
    assert moved("modelway_request_duration_seconds_count", surface="openai", model="echo-1") == 5
    assert moved("modelway_request_duration_seconds_count", surface="grpc", model="echo-1") == 2
    # Only streamed calls have a time to first token.
    assert moved("modelway_time_to_first_token_seconds_count", surface="openai", model="echo-1") == 2
    assert moved("modelway_time_to_first_token_seconds_count", surface="grpc", model="echo-1") == 1
    assert moved("modelway_upstream_attempt_duration_seconds_count", provider="echo", outcome="ok") == 7

    # Tokens and credits equal what the usage table says these calls used and cost.
    assert all(row["status"] == 200 for row in used)
    assert moved("modelway_input_tokens_total", model="echo-1") == sum(row["prompt_tokens"] for row in used) > 0
    assert moved("modelway_output_tokens_total", model="echo-1") == sum(row["completion_tokens"] for row in used) > 0
    charged = sum(row["cost"] for row in used) / 1_000_000
    assert moved("modelway_credits_charged_total", model="echo-1") == pytest.approx(charged) and charged > 0

    assert after.value("modelway_usage_queue_depth") == 0
    # The rows are in the table, so their batch committed (observed as the write returns).
    deadline = time.monotonic() + 2
    while ops.scrape().value("modelway_usage_commit_duration_seconds_count") == before.value(
        "modelway_usage_commit_duration_seconds_count"
    ):
        assert time.monotonic() < deadline, "no usage commit observed"
        time.sleep(0.02)
    assert after.value("process_resident_memory_bytes") > 0


def test_rejections_are_counted_by_reason(ops: Ops) -> None:
    stack = ops.stack
    before = ops.settled()
    _, limited = stack.create_key("limited", stack.account_id, "--rate-limit", "1")
    assert chat(stack, limited).status == 200
    assert chat(stack, limited).status == 429
    _, frugal = stack.create_key("frugal", stack.account_id, "--daily-token-budget", "5")
    assert chat(stack, frugal).status == 200
    assert chat(stack, frugal).status == 429
    broke = stack.create_account(f"broke-{uuid.uuid4().hex[:6]}", credits=0)
    _, penniless = stack.create_key("penniless", broke)
    assert chat(stack, penniless).status == 429  # OpenAI shows insufficient_quota as a 429
    after = ops.settled()
    for reason in ("rate_limit_exceeded", "daily_token_budget_exceeded", "insufficient_quota"):
        assert (
            after.value("modelway_rejections_total", reason=reason)
            - before.value("modelway_rejections_total", reason=reason)
            == 1
        ), reason


def test_breaker_gauge_follows_a_failing_provider(ops: Ops) -> None:
    stack = ops.stack
    assert ops.scrape().value("modelway_circuit_breaker_state", provider="flaky") == 0
    before = ops.scrape()
    ops.upstream.script(Json(fake_openai.error_json("boom", "server_error"), status=500))
    failed = chat(stack, stack.api_key, model="flaky-1")
    assert failed.status in (502, 503), failed.body
    opened = ops.scrape()
    assert opened.value("modelway_circuit_breaker_state", provider="flaky") == 1
    failures = opened.total("modelway_upstream_attempt_duration_seconds_count", provider="flaky") - before.total(
        "modelway_upstream_attempt_duration_seconds_count", provider="flaky"
    )
    assert failures == 1
    assert opened.value(
        "modelway_upstream_attempt_duration_seconds_count", provider="flaky", outcome="ok"
    ) == before.value("modelway_upstream_attempt_duration_seconds_count", provider="flaky", outcome="ok")
    time.sleep(1.1)  # the cool-down
    assert ops.scrape().value("modelway_circuit_breaker_state", provider="flaky") == 2
    assert chat(stack, stack.api_key, model="flaky-1").status == 200
    assert ops.scrape().value("modelway_circuit_breaker_state", provider="flaky") == 0


def test_metrics_are_not_served_through_envoy(ops: Ops) -> None:
    reply = request(ops.stack.http_port, "GET", "/metrics")
    assert reply.status != 200
    assert b"modelway_" not in reply.body


def test_health_and_readiness(ops: Ops) -> None:
    for path, answer in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
        status, content_type, body = ops.get(path)
        assert (status, content_type, json.loads(body)) == (200, "application/json; charset=utf-8", answer)
    with grpc.insecure_channel(ops.stack.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


CALL_FIELDS = {
    "ts",
    "level",
    "logger",
    "message",
    "request_id",
    "client_request_id",
    "surface",
    "account_id",
    "key_id",
    "model",
    "provider",
    "status",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "tokens_in",
    "tokens_out",
    "credits",
}


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    text = (stack.workdir / "server.log").read_text()
    lines = [line for line in text.splitlines() if line]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


def call_line(stack: Stack, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [line for line in log_lines(stack) if line.get("request_id") == request_id]
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no log line for {request_id}")


def test_one_json_log_line_per_call_without_prompt_or_key(ops: Ops) -> None:
    stack = ops.stack
    marker = f"secret-plan-{uuid.uuid4().hex}"
    ok = chat(stack, stack.api_key, stream=True, text=f"Tell nobody: {marker}")
    assert ok.status == 200
    line = call_line(stack, ok.headers["x-request-id"])
    assert set(line) == CALL_FIELDS
    row = rows(stack.db_path, [ok.headers["x-request-id"]])[0]
    assert line["logger"] == "modelway.calls" and line["level"] == "info" and line["message"] == "call"
    assert (line["surface"], line["model"], line["provider"], line["status"], line["error_code"]) == (
        "openai",
        "echo-1",
        "echo",
        200,
        "",
    )
    assert (line["tokens_in"], line["tokens_out"], line["latency_ms"]) == (
        row["prompt_tokens"],
        row["completion_tokens"],
        row["latency_ms"],
    )
    assert line["credits"] == pytest.approx(row["cost"] / 1_000_000) and line["credits"] > 0
    assert isinstance(line["ttft_ms"], (int, float)) and 0 <= line["ttft_ms"] <= line["latency_ms"] + 1
    assert (line["account_id"], line["key_id"]) == (row["account_id"], row["key_id"])

    failed = chat(stack, stack.api_key, model="no-such-model", text=marker)
    assert failed.status == 404
    line = call_line(stack, failed.headers["x-request-id"])
    assert (line["status"], line["error_code"], line["ttft_ms"]) == (404, "model_not_found", None)

    log = (stack.workdir / "server.log").read_bytes()
    assert marker.encode() not in log
    assert stack.api_key.encode() not in log


def test_readiness_flips_to_draining_while_calls_finish(tmp_path: Path) -> None:
    with running_stack(tmp_path, TEST_CONFIG) as stack:
        ops = Ops(stack, upstream=None)  # type: ignore[arg-type]
        assert ops.get("/readyz")[0] == 200
        long_text = " ".join(["word"] * 120)  # about 2.5 s at echo-slow's 20 ms a token
        answers: list[Reply] = []
        streaming = threading.Thread(
            target=lambda: answers.append(chat(stack, stack.api_key, model="echo-slow", stream=True, text=long_text))
        )
        streaming.start()
        # A health watch opened before the signal sees the change (new connections are refused while draining).
        channel = grpc.insecure_channel(stack.grpc_target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)
        assert stack.server is not None
        stack.server.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        deadline = time.monotonic() + 2
        while ops.get("/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        status, _, body = ops.get("/readyz")
        assert (status, json.loads(body)) == (503, {"status": "draining"})
        assert ops.get("/healthz")[0] == 200  # alive while draining
        assert answers == []  # the stream is still running
        streaming.join(timeout=30)
        assert answers and answers[0].status == 200 and answers[0].body.endswith(b"data: [DONE]\n\n")
        assert stack.server.wait(timeout=30) == 0
        stack.server = None
        watch.cancel()
        channel.close()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{ops.port}/healthz", timeout=2)
