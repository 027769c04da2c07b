"""Pipeline.stop_streams (what Gateway.stop calls when the grace period runs out) ends every running call.

A REST stream through Envoy gets the OpenAI error frame and `data: [DONE]`; a
non-streamed REST call and a native gRPC stream fail with 503 / UNAVAILABLE in
their own shape; every row says 503 "server_shutdown" (not 499
client_closed), charged for what was delivered.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import grpc

from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import ClockedStack
from tests.real.postgres import connect_db

CHAT = "/api/v1/chat/completions"
LONG = " ".join(f"w{i}" for i in range(400))  # 400 tokens at 20 ms each: 8 s unless stopped
SHUTTING_DOWN = "The server is shutting down; retry shortly"


def row(clocked: ClockedStack, request_id: str) -> tuple[Any, ...]:
    with connect_db(clocked.stack.db_path) as db:
        found = db.execute(
            "SELECT status, error_code, completion_tokens, cost FROM usage WHERE request_id = ?", [request_id]
        ).fetchall()
    assert len(found) == 1, found
    return tuple(found[0])


def stop_streams(clocked: ClockedStack) -> int:
    async def stop() -> int:
        return clocked.gateway.pipeline.stop_streams()

    return int(clocked.run(stop()))


def test_stop_streams_ends_streams_with_an_error_frame_and_done_and_records_a_shutdown(clocked: ClockedStack) -> None:
    stack = clocked.stack
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    message = [{"role": "user", "content": LONG}]

    # A REST stream through Envoy, read until it is well under way.
    sse = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=15)
    sse.request("POST", CHAT, json.dumps({"model": "echo-slow", "stream": True, "messages": message}), headers)
    streamed = sse.getresponse()
    assert streamed.status == 200
    received = b""
    while received.count(b"\n\n") < 5:
        received += streamed.read1(4096)

    # A whole (non-streamed) answer being generated.
    unary: dict[str, Any] = {}

    def whole() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=15)
        connection.request("POST", CHAT, json.dumps({"model": "echo-slow", "messages": message}), headers)
        response = connection.getresponse()
        unary.update(status=response.status, body=response.read(), id=response.getheader("x-request-id"))
        connection.close()

    unary_thread = threading.Thread(target=whole)
    unary_thread.start()

    # A native gRPC stream, straight to the server.
    channel = grpc.insecure_channel(stack.grpc_target)
    native = chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
        chat_pb2.CreateChatCompletionRequest(
            model="echo-slow", messages=[chat_pb2.ChatMessage(role="user", text=LONG)]
        ),
        metadata=[("authorization", f"Bearer {stack.api_key}")],
        timeout=15,
    )
    native_chunks = [next(native) for _ in range(3)]
    time.sleep(0.3)  # the non-streamed call is under way too

    started = time.monotonic()
    assert stop_streams(clocked) == 3

    # The REST stream: the error frame in OpenAI's shape, then [DONE], promptly.
    received += streamed.read()
    assert time.monotonic() - started < 2
    sse.close()
    frames = [frame for frame in received.decode().split("\n\n") if frame]
    assert frames[-1] == "data: [DONE]"
    error = json.loads(frames[-2].removeprefix("data: "))
    assert error == {
        "error": {"message": SHUTTING_DOWN, "type": "api_error", "param": None, "code": "service_unavailable"}
    }
    deltas = len(frames) - 2
    status, code, completion_tokens, cost = row(clocked, streamed.getheader("x-request-id") or "")
    assert (status, code) == (503, "server_shutdown")
    # Billed for what was delivered: at least the deltas we saw (each one token), far less than the whole.
    assert deltas - 1 <= completion_tokens < 200
    assert cost > 0

    # The whole answer: a 503 error body, nothing delivered, nothing charged.
    unary_thread.join(timeout=5)
    assert unary["status"] == 503
    assert json.loads(unary["body"])["error"]["message"] == SHUTTING_DOWN
    assert row(clocked, unary["id"]) == (503, "server_shutdown", 0, 0)

    # The native stream: UNAVAILABLE with the same words after what it already had.
    try:
        rest = list(native)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert exc.details() == SHUTTING_DOWN
        native_id = dict(exc.initial_metadata())["x-request-id"]  # type: ignore[attr-defined]
    else:
        raise AssertionError(f"the native stream ended normally after {len(native_chunks) + len(rest)} chunks")
    status, code, completion_tokens, _ = row(clocked, native_id)
    assert (status, code) == (503, "server_shutdown") and completion_tokens >= 3
    channel.close()
