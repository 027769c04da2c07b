"""Fault injection under load: 500 concurrent mixed calls against upstreams that fail in every way.

Calls go through Envoy on every REST surface (OpenAI chat JSON and SSE,
Gemini generateContent and streamGenerateContent (SSE and JSON array), the gateway-native
ai/chat and ai/generate, JSON and SSE, OpenAI images, and chat/send; the
public catalog is read alongside, keyless and rowless) and native gRPC
(unary and stream), to OpenAI, Anthropic and Gemini fakes. Each call names its fault in
its prompt and the fake upstream acts it out: 500/503/429 (with
Retry-After), a connection dropped or reset before any answer or in the
middle of a stream, no first byte, a slow trickle, malformed JSON, malformed
SSE, the wrong content type; some clients leave mid-stream, and a
small-credit account races to zero beside the rest. Then, whatever happened:

  - every client got a complete answer or an error in its surface's shape
    (never a hang: each call has a client timeout; never a bare 5xx);
  - there is exactly one usage row per call made, disconnected ones included;
  - each account's balance dropped by exactly the sum of its rows' costs,
    and no balance is negative;
  - the upstreams go idle: no reply is left being written.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import grpc
import pytest

from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.fakes import anthropic as fake_anthropic
from tests.fakes import gemini as fake_gemini
from tests.fakes import openai as fake_openai
from tests.fakes.server import Cut, FakeUpstream, Hang, Json, Received, Reply, Reset, Sse, Trickle
from tests.real.postgres import connect_db

CALLS = 450
SMALL_CALLS = 50  # the small-credit account's, in the same burst: 500 in all
CLIENT_TIMEOUT = 20.0
SMALL_CREDITS = 0.3

FAULTS = (
    "ok",
    "status_500",
    "status_503",
    "status_429",
    "cut_before",
    "reset_before",
    "reset_mid",
    "no_first_byte",
    "trickle",
    "malformed",
    "wrong_content_type",
)
SURFACES = (
    "rest_json",
    "rest_sse",
    "grpc_unary",
    "grpc_stream",
    "gemini_json",
    "gemini_sse",
    "gemini_array",
    "native_json",
    "native_sse",
    "images",
    "chat_send",
)
# Public catalog reads made during the burst: no key, no upstream, no row; each must still answer.
CATALOG_READS = 40
# The usage row's surface name for each kind of call.
ROW_SURFACE = {
    "rest_json": "openai",
    "rest_sse": "openai",
    "grpc_unary": "grpc",
    "grpc_stream": "grpc",
    "gemini_json": "gemini",
    "gemini_sse": "gemini",
    "gemini_array": "gemini",
    "native_json": "native",
    "native_sse": "native",
    "images": "openai-images",
    "chat_send": "chat-send",
}
STREAMING = ("rest_sse", "grpc_stream", "gemini_sse", "gemini_array", "native_sse")
MODELS = ("gpt", "claude", "gemini")
IMAGE_MODEL = "img"  # an images call always asks the OpenAI fake, whatever model its chat neighbours use

PROVIDERS = """
[routing]
retries = 1
backoff_seconds = 0.05
max_backoff_seconds = 2
breaker_failures = 100000
breaker_cooldown_seconds = 1

[[providers]]
name = "oai"
kind = "openai"
base_url = "{openai}/v1"
first_byte_timeout_seconds = 0.5

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{anthropic}"
first_byte_timeout_seconds = 0.5

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{gemini}"
first_byte_timeout_seconds = 0.5

[[models]]
id = "gpt"
provider = "oai"
upstream_model = "gpt-4o-mini"
input_credits_per_1k = 1
output_credits_per_1k = 2

[[models]]
id = "claude"
provider = "claude"
upstream_model = "claude-sonnet-4-5"
max_output_tokens = 1024
input_credits_per_1k = 2
output_credits_per_1k = 4

[[models]]
id = "gemini"
provider = "gem"
upstream_model = "gemini-2.5-flash"
input_credits_per_1k = 1
output_credits_per_1k = 1

[[models]]
id = "img"
provider = "oai"
upstream_model = "dall-e-3"
type = "image"
credits_per_image = 0.02
"""

_FAULT = re.compile(rb"fault=(\w+)")


def error_body(kind: str, status: int) -> Any:
    if kind == "openai":
        return fake_openai.error_json("The server had an error.", "server_error")
    if kind == "anthropic":
        return fake_anthropic.error_json("overloaded_error" if status != 429 else "rate_limit_error", "Overloaded")
    return fake_gemini.error_json(status, "The service is unavailable.", "UNAVAILABLE")


def faulty(kind: str, default: Callable[[Received], Reply]) -> Callable[[Received], Reply]:
    """The kind's plausible upstream, acting out the fault the prompt names."""

    def handler(received: Received) -> Reply:
        found = _FAULT.search(received.body)
        fault = found.group(1).decode() if found else "ok"
        normal = default(received)
        streaming = isinstance(normal, Sse)
        if fault in ("status_500", "status_503", "status_429"):
            status = int(fault[-3:])
            headers = {"Retry-After": "1"} if status == 429 else {}
            return Json(error_body(kind, status), status=status, headers=headers)
        if fault == "cut_before":
            return Cut()
        if fault == "reset_before":
            return Reset()
        if fault == "no_first_byte":
            return Hang(2.0)
        if fault == "reset_mid":
            if isinstance(normal, Sse):
                return replace(normal, cut=2, reset=True)
            assert isinstance(normal, Json)
            return Trickle(json.dumps(normal.body).encode(), pieces=4, cut=2, reset=True)
        if fault == "trickle":
            if isinstance(normal, Sse):
                return replace(normal, gap=0.05)
            assert isinstance(normal, Json)
            return Trickle(json.dumps(normal.body).encode(), pieces=8, gap=0.05)
        if fault == "malformed":
            if streaming:
                return Sse([b'data: {"choices": [{"delta": \n\n', b"data: }}}not json{{{\n\n", b"event\x00: ?\n\n"])
            return Json(b'{"id": "x", "choices": [{"message": ', status=200)
        if fault == "wrong_content_type":
            return Json(b"<html><body>Bad gateway</body></html>", status=200, content_type="text/html")
        return normal

    return handler


@dataclass
class Fakes:
    stack: Stack
    upstreams: dict[str, FakeUpstream]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    upstreams = {
        "openai": FakeUpstream(faulty("openai", fake_openai.default)).start(),
        "anthropic": FakeUpstream(faulty("anthropic", fake_anthropic.default)).start(),
        "gemini": FakeUpstream(faulty("gemini", fake_gemini.default)).start(),
    }
    config = TEST_CONFIG + PROVIDERS.format(**{name: fake.base_url for name, fake in upstreams.items()})
    try:
        with running_stack(tmp_path_factory.mktemp("faults"), config) as stack:
            yield Fakes(stack, upstreams)
    finally:
        for fake in upstreams.values():
            fake.stop()


@dataclass(frozen=True)
class Call:
    index: int
    surface: str
    model: str
    fault: str
    key: str
    leave_early: bool = False  # the client disconnects after the first frame

    @property
    def text(self) -> str:
        return f"call {self.index} fault={self.fault} please answer"


@dataclass(frozen=True)
class Outcome:
    call: Call
    kind: str  # "answer", "error", "left" (the client went away), or "bad: ..." for a broken promise
    mid_stream: bool = False  # the error came inside a 200 stream, after its first frame


def is_error_json(body: bytes) -> bool:
    """OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return set(error) == {"message", "type", "param", "code"} and bool(error["message"])


def is_gemini_error(value: Any, status: int | None = None) -> bool:
    """Google's shape: {"error": {"code": <the HTTP status>, "message", "status", "details"?}}."""
    error = value.get("error") if isinstance(value, dict) else None
    if not isinstance(error, dict) or not {"code", "message", "status"} <= set(error):
        return False
    if not set(error) <= {"code", "message", "status", "details"} or not error["message"]:
        return False
    code = error["code"]
    return isinstance(code, int) and code >= 400 and (status is None or code == status) and error["status"].isupper()


def is_native_error(value: Any) -> bool:
    """The gateway-native shape: {"error": {"code": "RATE_LIMITED", "message": "..."}}."""
    error = value.get("error") if isinstance(value, dict) else None
    return (
        isinstance(error, dict)
        and list(error) == ["code", "message"]
        and str(error["code"]).isupper()
        and bool(error["message"])
    )


def parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def body_of(call: Call) -> dict[str, Any]:
    return {
        "model": call.model,
        "stream": call.surface == "rest_sse",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": call.text}],
    }


async def rest(session: aiohttp.ClientSession, stack: Stack, call: Call) -> Outcome:
    async with session.post(
        stack.http_base + "/api/v1/chat/completions",
        json=body_of(call),
        headers={"Authorization": f"Bearer {call.key}"},
    ) as response:
        if call.surface == "rest_json" or response.status != 200:
            body = await response.read()
            if response.status == 200:
                answer = json.loads(body)
                ok = answer["object"] == "chat.completion" and answer["choices"] and answer["usage"]
                return Outcome(call, "answer" if ok else f"bad: 200 body {body[:200]!r}")
            if is_error_json(body):
                return Outcome(call, "error")
            return Outcome(call, f"bad: {response.status} body {body[:200]!r}")
        if call.leave_early:
            await response.content.readuntil(b"\n\n")
            response.close()
            return Outcome(call, "left")
        body = await response.read()
        frames = [frame for frame in body.split(b"\n\n") if frame]
        if not frames or frames[-1] != b"data: [DONE]":
            return Outcome(call, f"bad: stream without [DONE]: {body[-200:]!r}")
        payloads = [json.loads(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
        if any("error" in payload for payload in payloads):
            last = payloads[-1]
            shaped = "error" in last and is_error_json(json.dumps(last).encode())
            return Outcome(call, "error", mid_stream=True) if shaped else Outcome(call, f"bad: error frame {last}")
        return Outcome(call, "answer")


async def gemini(session: aiohttp.ClientSession, stack: Stack, call: Call) -> Outcome:
    """generateContent: the JSON answer, or a google.rpc error whose code is the HTTP status;
    streamGenerateContent: `data: {json}\\r\\n\\r\\n` events, the last one carrying usageMetadata and a
    finishReason, or an error event (no [DONE] on this surface)."""
    method = {"gemini_sse": "streamGenerateContent?alt=sse", "gemini_array": "streamGenerateContent"}.get(
        call.surface, "generateContent"
    )
    body = {
        "contents": [{"role": "user", "parts": [{"text": call.text}]}],
        "generationConfig": {"maxOutputTokens": 32},
    }
    async with session.post(
        f"{stack.http_base}/api/v1beta/models/{call.model}:{method}", json=body, headers={"x-goog-api-key": call.key}
    ) as response:
        if call.surface == "gemini_json" or response.status != 200:
            raw = await response.read()
            value = parsed(raw)
            if response.status == 200:
                ok = isinstance(value, dict) and value.get("candidates") and value.get("usageMetadata")
                return Outcome(call, "answer" if ok else f"bad: 200 body {raw[:200]!r}")
            if is_gemini_error(value, response.status):
                return Outcome(call, "error")
            return Outcome(call, f"bad: {response.status} body {raw[:200]!r}")
        if call.leave_early:
            await response.content.readany()
            response.close()
            return Outcome(call, "left")
        raw = await response.read()
        if call.surface == "gemini_array":
            return gemini_array(call, raw)
        if not raw.endswith(b"\r\n\r\n") or b"[DONE]" in raw:
            return Outcome(call, f"bad: stream not ended by an event: {raw[-200:]!r}")
        frames = raw[: -len(b"\r\n\r\n")].split(b"\r\n\r\n")
        if not all(frame.startswith(b"data: ") for frame in frames):
            return Outcome(call, f"bad: stream framing {raw[-200:]!r}")
        events = [parsed(frame.removeprefix(b"data: ")) for frame in frames]
        last = events[-1]
        if any(isinstance(event, dict) and "error" in event for event in events[:-1]):
            return Outcome(call, f"bad: an error event before the end: {raw[-300:]!r}")
        if isinstance(last, dict) and "error" in last:
            if is_gemini_error(last):
                return Outcome(call, "error", mid_stream=True)
            return Outcome(call, f"bad: error event {last}")
        done = (
            isinstance(last, dict)
            and last.get("usageMetadata")
            and all(candidate.get("finishReason") for candidate in last.get("candidates") or [{}])
        )
        return Outcome(call, "answer" if done else f"bad: last event {raw[-300:]!r}")


def gemini_array(call: Call, raw: bytes) -> Outcome:
    """streamGenerateContent without alt=sse: one JSON array `[{...}\\r\\n,\\r\\n{...}\\r\\n]`, its last element
    carrying usageMetadata and a finishReason, or a google.rpc error object (the array still closed)."""
    elements = parsed(raw)
    if not raw.startswith(b"[{") or not raw.endswith(b"}\r\n]") or not isinstance(elements, list):
        return Outcome(call, f"bad: not a closed JSON array: {raw[-200:]!r}")
    if not all(isinstance(element, dict) for element in elements):
        return Outcome(call, f"bad: array elements {raw[-300:]!r}")
    last = elements[-1]
    if any("error" in element for element in elements[:-1]):
        return Outcome(call, f"bad: an error element before the end: {raw[-300:]!r}")
    if "error" in last:
        return Outcome(call, "error", mid_stream=True) if is_gemini_error(last) else Outcome(call, f"bad: {last}")
    done = last.get("usageMetadata") and all(c.get("finishReason") for c in last.get("candidates") or [{}])
    return Outcome(call, "answer" if done else f"bad: last element {raw[-300:]!r}")


async def native_api(session: aiohttp.ClientSession, stack: Stack, call: Call) -> Outcome:
    """ai/chat (even calls) or ai/generate (odd): {content, model, usage, finishReason}, or
    {"error": {"code", "message"}}; streamed, `data: {"text"}`... then usage or `data: {"error": "..."}`,
    and always `data: [DONE]`."""
    streaming = call.surface == "native_sse"
    options: dict[str, Any] = {"model": call.model, "stream": streaming, "max_tokens": 32}
    if call.index % 2:
        path, body = "/api/v1/ai/generate", {**options, "prompt": call.text}
    else:
        path, body = "/api/v1/ai/chat", {**options, "messages": [{"role": "user", "content": call.text}]}
    async with session.post(
        stack.http_base + path, json=body, headers={"Authorization": f"Bearer {call.key}"}
    ) as response:
        if not streaming or response.status != 200:
            raw = await response.read()
            value = parsed(raw)
            if response.status == 200:
                ok = isinstance(value, dict) and "content" in value and value.get("usage") and value.get("finishReason")
                return Outcome(call, "answer" if ok else f"bad: 200 body {raw[:200]!r}")
            if is_native_error(value):
                return Outcome(call, "error")
            return Outcome(call, f"bad: {response.status} body {raw[:200]!r}")
        if call.leave_early:
            await response.content.readuntil(b"\n\n")
            response.close()
            return Outcome(call, "left")
        raw = await response.read()
        frames = [frame for frame in raw.split(b"\n\n") if frame]
        if not frames or frames[-1] != b"data: [DONE]":
            return Outcome(call, f"bad: stream without [DONE]: {raw[-200:]!r}")
        payloads = [parsed(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
        if not payloads or not all(isinstance(payload, dict) for payload in payloads):
            return Outcome(call, f"bad: stream frames {raw[-300:]!r}")
        last = payloads[-1]
        if any("error" in payload for payload in payloads[:-1]):
            return Outcome(call, f"bad: an error frame before the end: {raw[-300:]!r}")
        if "error" in last:
            shaped = list(last) == ["error"] and isinstance(last["error"], str) and bool(last["error"])
            return Outcome(call, "error", mid_stream=True) if shaped else Outcome(call, f"bad: error frame {last}")
        done = list(last) == ["usage", "finishReason"] and all(list(p) == ["text"] for p in payloads[:-1])
        return Outcome(call, "answer" if done else f"bad: stream frames {raw[-300:]!r}")


async def images(session: aiohttp.ClientSession, stack: Stack, call: Call) -> Outcome:
    """OpenAI's Images API: {created, data: [...]} with one item per image asked, or an OpenAI error."""
    body = {
        "model": IMAGE_MODEL,
        "prompt": call.text,
        "n": 1 + call.index % 2,
        "response_format": "b64_json" if call.index % 3 else "url",
    }
    async with session.post(
        stack.http_base + "/api/v1/images/generations", json=body, headers={"Authorization": f"Bearer {call.key}"}
    ) as response:
        raw = await response.read()
        if response.status == 200:
            value = parsed(raw)
            ok = isinstance(value, dict) and value.get("created") and len(value.get("data") or []) == body["n"]
            return Outcome(call, "answer" if ok else f"bad: 200 body {raw[:200]!r}")
        if is_error_json(raw):
            return Outcome(call, "error")
        return Outcome(call, f"bad: {response.status} body {raw[:200]!r}")


def is_envelope_error(value: Any) -> bool:
    """chat/send's shape: {"success": false, "message": "..."}."""
    return (
        isinstance(value, dict)
        and set(value) == {"success", "message"}
        and value["success"] is False
        and isinstance(value["message"], str)
        and bool(value["message"])
    )


async def chat_send(session: aiohttp.ClientSession, stack: Stack, call: Call) -> Outcome:
    """POST /api/v1/chat/send: the envelope with {conversation_id, assistant_message_id, response, message,
    usage}, or {"success": false, "message"}."""
    body = {"model_id": call.model, "message": call.text}
    async with session.post(
        stack.http_base + "/api/v1/chat/send", json=body, headers={"X-API-Key": call.key}
    ) as response:
        raw = await response.read()
        value = parsed(raw)
        if response.status == 200:
            data = value.get("data") if isinstance(value, dict) and value.get("success") is True else None
            ok = isinstance(data, dict) and isinstance(data.get("conversation_id"), int) and "response" in data
            return Outcome(call, "answer" if ok else f"bad: 200 body {raw[:200]!r}")
        if is_envelope_error(value):
            return Outcome(call, "error")
        return Outcome(call, f"bad: {response.status} body {raw[:200]!r}")


async def catalog_read(session: aiohttp.ClientSession, stack: Stack, index: int) -> str:
    """One public catalog read; "" when it answered its envelope, else what was wrong."""
    path = ("/api/models?page=1", "/api/models?q=gpt", "/api/categories", "/api/models/gpt")[index % 4]
    async with session.get(stack.http_base + path) as response:
        raw = await response.read()
        value = parsed(raw)
        good = (
            response.status == 200
            and isinstance(value, dict)
            and value.get("success") is True
            and value.get("data") is not None
        )
        return "" if good else f"{path}: {response.status} {raw[:200]!r}"


def grpc_error(call: Call, exc: grpc.aio.AioRpcError) -> Outcome:
    details = exc.details() or ""
    if exc.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK) or not details or "<class" in details:
        return Outcome(call, f"bad: gRPC {exc.code()} {details!r}")
    return Outcome(call, "error")


async def native(channel: grpc.aio.Channel, call: Call) -> Outcome:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    request = chat_pb2.CreateChatCompletionRequest(
        model=call.model, max_tokens=32, messages=[chat_pb2.ChatMessage(role="user", text=call.text)]
    )
    metadata = [("authorization", f"Bearer {call.key}")]
    try:
        if call.surface == "grpc_unary":
            answer = await stub.CreateChatCompletion(request, metadata=metadata)
            return Outcome(call, "answer" if answer.choices else "bad: no choices")
        stream = stub.StreamChatCompletion(request, metadata=metadata)
        chunks = 0
        async for _ in stream:
            chunks += 1
            if call.leave_early:
                stream.cancel()
                return Outcome(call, "left")
        return Outcome(call, "answer" if chunks else "bad: empty stream")
    except grpc.aio.AioRpcError as exc:
        return grpc_error(call, exc)


async def run_all(stack: Stack, calls: list[Call]) -> list[Outcome]:
    start = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        grpc.aio.insecure_channel(stack.envoy_target) as via_envoy,
        grpc.aio.insecure_channel(stack.grpc_target) as direct,
    ):

        async def one(call: Call) -> Outcome:
            await start.wait()
            try:
                async with asyncio.timeout(CLIENT_TIMEOUT):
                    if call.surface.startswith("rest"):
                        return await rest(session, stack, call)
                    if call.surface.startswith("gemini"):
                        return await gemini(session, stack, call)
                    if call.surface.startswith("native"):
                        return await native_api(session, stack, call)
                    if call.surface == "images":
                        return await images(session, stack, call)
                    if call.surface == "chat_send":
                        return await chat_send(session, stack, call)
                    return await native(via_envoy if call.index % 2 else direct, call)
            except TimeoutError:
                return Outcome(call, "bad: no answer within the client timeout")
            except (aiohttp.ClientError, ConnectionError) as exc:
                return Outcome(call, f"bad: connection failed: {exc!r}")

        async def read_catalog(index: int) -> str:
            await start.wait()
            try:
                async with asyncio.timeout(CLIENT_TIMEOUT):
                    return await catalog_read(session, stack, index)
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                return f"catalog read failed: {exc!r}"

        tasks = [asyncio.create_task(one(call)) for call in calls]
        reads = [asyncio.create_task(read_catalog(index)) for index in range(CATALOG_READS)]
        await asyncio.sleep(0.05)
        start.set()
        failed_reads = [problem for problem in await asyncio.gather(*reads) if problem]
        assert not failed_reads, failed_reads[:5]
        return await asyncio.gather(*tasks)


def plan(key: str, small_key: str) -> list[Call]:
    calls = []
    round_size = len(FAULTS) * len(SURFACES)
    for index in range(CALLS):
        fault = FAULTS[index % len(FAULTS)]
        surface = SURFACES[(index // len(FAULTS)) % len(SURFACES)]
        model = IMAGE_MODEL if surface == "images" else MODELS[(index // round_size) % len(MODELS)]
        # Every other round, each stream's trickle call leaves after its first frame.
        leave = fault == "trickle" and surface in STREAMING and (index // round_size) % 2 == 0
        calls.append(Call(index, surface, model, fault, key, leave_early=leave))
    for index in range(CALLS, CALLS + SMALL_CALLS):
        surface = SURFACES[index % len(SURFACES)]
        model = IMAGE_MODEL if surface == "images" else MODELS[index % len(MODELS)]
        calls.append(Call(index, surface, model, "ok", small_key))
    return calls


def accounts_rows(stack: Stack, accounts: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per account: rows, the sum of their costs, and the balance (micro-credits)."""
    with connect_db(stack.db_path) as db:
        found = {}
        for account in accounts:
            rows, costs = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM usage WHERE account_id = ?", [account]
            ).fetchone()
            (credits,) = db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()
            found[account] = (rows, costs, credits)
        return found


def test_every_call_ends_well_and_leaves_one_row_whatever_the_upstream_does(fakes: Fakes) -> None:
    stack = fakes.stack
    account = stack.create_account("faults", credits=1000)
    small = stack.create_account("small", credits=SMALL_CREDITS)
    key = stack.create_key("faults", account)[1]
    small_key = stack.create_key("small", small)[1]
    calls = plan(key, small_key)
    started = time.monotonic()
    outcomes = asyncio.run(run_all(stack, calls))
    elapsed = time.monotonic() - started

    bad = [(o.call, o.kind) for o in outcomes if o.kind.startswith("bad")]
    assert not bad, f"{len(bad)} calls broke a promise, e.g. {bad[:5]}"
    kinds = Counter(o.kind for o in outcomes)
    by_fault = Counter((o.call.fault, o.kind) for o in outcomes)
    # The faults really happened: every fault answered some call with an error, and "ok" calls were answered.
    for fault in FAULTS:
        if fault not in ("ok", "trickle"):
            assert by_fault[(fault, "error")] > 0, fault
    assert by_fault[("ok", "answer")] > 0 and by_fault[("trickle", "answer")] > 0
    # ... on every surface: each answered some calls and refused others in its own shape, and on each
    # streaming surface some clients left mid-stream.
    by_surface = Counter((o.call.surface, o.kind) for o in outcomes)
    for surface in SURFACES:
        assert by_surface[(surface, "answer")] > 0 and by_surface[(surface, "error")] > 0, surface
        assert (by_surface[(surface, "left")] > 0) == (surface in STREAMING), surface
    # REST streams that failed after their first frame ended with their surface's error frame.
    mid_stream = Counter(o.call.surface for o in outcomes if o.mid_stream)
    assert all(mid_stream[surface] > 0 for surface in ("rest_sse", "gemini_sse", "gemini_array", "native_sse")), (
        mid_stream
    )
    small_outcomes = Counter(o.kind for o in outcomes if o.call.key == small_key)
    assert small_outcomes["error"] > 0, "the small account never ran out: no race to zero"

    # One row per call (the rows of calls whose client left are written without anyone waiting, and a
    # stream's checkpoint row says "in progress" (status 0) until its final one replaces it: poll briefly).
    expected = {account: CALLS, small: SMALL_CALLS}
    deadline = time.monotonic() + 10
    while True:
        found = accounts_rows(stack, [account, small])
        with connect_db(stack.db_path) as db:
            (running,) = db.execute(
                "SELECT COUNT(*) FROM usage WHERE account_id IN (?, ?) AND status = 0", [account, small]
            ).fetchone()
        settled = all(found[a][0] == n for a, n in expected.items()) and running == 0
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {a: found[a][0] for a in expected} == expected
    with connect_db(stack.db_path) as db:
        duplicates = db.execute("SELECT request_id FROM usage GROUP BY request_id HAVING COUNT(*) > 1").fetchall()
        statuses = Counter(
            status
            for (status,) in db.execute(
                "SELECT status FROM usage WHERE account_id IN (?, ?)", [account, small]
            ).fetchall()
        )
        row_surfaces = Counter(
            surface
            for (surface,) in db.execute(
                "SELECT surface FROM usage WHERE account_id IN (?, ?)", [account, small]
            ).fetchall()
        )
    assert duplicates == []
    # Each row carries its surface's name.
    assert row_surfaces == Counter(ROW_SURFACE[call.surface] for call in calls)
    # A client that left is recorded 499, or 200 when its whole answer had already gone out before it left.
    assert 0 < statuses[499] <= kinds["left"]
    assert statuses[200] == kinds["answer"] + kinds["left"] - statuses[499], (statuses, kinds)
    for account_id, credits in ((account, 1000), (small, SMALL_CREDITS)):
        _, costs, balance = found[account_id]
        assert balance >= 0
        assert int(credits * 1_000_000) - balance == costs

    # The upstream side goes idle: no reply left being written (a hung one ends on its own within 2 s).
    deadline = time.monotonic() + 5
    while any(fake.active for fake in fakes.upstreams.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {name: fake.active for name, fake in fakes.upstreams.items()} == dict.fromkeys(fakes.upstreams, 0)

    requests = sum(len(fake.requests) for fake in fakes.upstreams.values())
    per_surface = {
        surface: {
            kind: by_surface[(surface, kind)] for kind in ("answer", "error", "left") if by_surface[(surface, kind)]
        }
        for surface in SURFACES
    }
    print(
        f"\n{len(calls)} calls in {elapsed:.1f}s: {dict(kinds)}; per surface {per_surface}; "
        f"errors inside a stream {dict(mid_stream)}; upstream requests {requests}; "
        f"faults {dict(Counter(c.fault for c in calls))}; small account {dict(small_outcomes)}; "
        f"rows {dict(statuses)}; open upstream connections after "
        f"{ {name: fake.open_connections for name, fake in fakes.upstreams.items()} }"
    )
