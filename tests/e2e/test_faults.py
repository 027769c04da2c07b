"""Fault injection under load: 500 concurrent mixed calls against upstreams that fail in every way.

Calls go through Envoy (OpenAI REST, JSON and SSE) and native gRPC (unary and
stream), to OpenAI, Anthropic and Gemini fakes. Each call names its fault in
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
import sqlite3
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
SURFACES = ("rest_json", "rest_sse", "grpc_unary", "grpc_stream")
MODELS = ("gpt", "claude", "gemini")

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


def is_error_json(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return set(error) == {"message", "type", "param", "code"} and bool(error["message"])


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
            return Outcome(call, "error" if shaped else f"bad: error frame {last}")
        return Outcome(call, "answer")


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
                    return await native(via_envoy if call.index % 2 else direct, call)
            except TimeoutError:
                return Outcome(call, "bad: no answer within the client timeout")
            except (aiohttp.ClientError, ConnectionError) as exc:
                return Outcome(call, f"bad: connection failed: {exc!r}")

        tasks = [asyncio.create_task(one(call)) for call in calls]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def plan(key: str, small_key: str) -> list[Call]:
    calls = []
    for index in range(CALLS):
        fault = FAULTS[index % len(FAULTS)]
        surface = SURFACES[(index // len(FAULTS)) % len(SURFACES)]
        model = MODELS[(index // (len(FAULTS) * len(SURFACES))) % len(MODELS)]
        leave = fault == "trickle" and surface in ("rest_sse", "grpc_stream") and index % 3 == 0
        calls.append(Call(index, surface, model, fault, key, leave_early=leave))
    for index in range(CALLS, CALLS + SMALL_CALLS):
        calls.append(Call(index, SURFACES[index % 4], MODELS[index % 3], "ok", small_key))
    return calls


def accounts_rows(stack: Stack, accounts: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per account: rows, the sum of their costs, and the balance (micro-credits)."""
    with sqlite3.connect(stack.db_path) as db:
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
    assert kinds["left"] > 0
    small_outcomes = Counter(o.kind for o in outcomes if o.call.key == small_key)
    assert small_outcomes["error"] > 0, "the small account never ran out: no race to zero"

    # One row per call (the rows of calls whose client left are written without anyone waiting: poll briefly).
    expected = {account: CALLS, small: SMALL_CALLS}
    deadline = time.monotonic() + 5
    while True:
        found = accounts_rows(stack, [account, small])
        if all(found[a][0] == n for a, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {a: found[a][0] for a in expected} == expected
    with sqlite3.connect(stack.db_path) as db:
        duplicates = db.execute("SELECT request_id FROM usage GROUP BY request_id HAVING COUNT(*) > 1").fetchall()
        statuses = Counter(
            status
            for (status,) in db.execute(
                "SELECT status FROM usage WHERE account_id IN (?, ?)", [account, small]
            ).fetchall()
        )
    assert duplicates == []
    # A client that left is recorded 499, or 200 when its whole answer had already gone out before it left.
    assert 0 < statuses[499] <= kinds["left"]
    assert statuses[200] == kinds["answer"] + kinds["left"] - statuses[499]
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
    print(
        f"\n{len(calls)} calls in {elapsed:.1f}s: {dict(kinds)}; upstream requests {requests}; "
        f"faults {dict(Counter(c.fault for c in calls))}; small account {dict(small_outcomes)}; "
        f"rows {dict(statuses)}; open upstream connections after "
        f"{ {name: fake.open_connections for name, fake in fakes.upstreams.items()} }"
    )
