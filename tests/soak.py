"""`make soak`: mixed load against a real stack for SOAK_SECONDS (default 120), then the server's memory verdict.

The load, from SOAK_WORKERS concurrent clients (default 12), each picking in turn:
REST JSON and SSE through Envoy, native gRPC unary and streaming (direct and
through Envoy), and failing calls: a wrong key, an unknown model, a bad body,
an upstream that always answers 503. After a warm-up (a tenth of the time, at
least 5 s) the server's RSS is read from /proc; at the end it is read again.
The run fails when RSS grew by more than SOAK_MAX_GROWTH (default 0.10), when
any call got an answer it should not have, or when the usage table, the
metrics and the calls made disagree on the number of calls.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.fakes.server import FakeUpstream, Json
from tests.real.postgres import connect_db

DOWN = """
[routing]
retries = 0
breaker_failures = 1000000

[[providers]]
name = "down"
kind = "openai"
base_url = "{base}/v1"

[[models]]
id = "down-1"
provider = "down"
"""

KINDS = ("json", "sse", "grpc", "grpc-stream", "grpc-envoy", "bad-key", "bad-model", "bad-body", "upstream-503")
EXPECTED = {
    "json": 200,
    "sse": 200,
    "grpc": 0,
    "grpc-stream": 0,
    "grpc-envoy": 0,
    "bad-key": 401,
    "bad-model": 404,
    "bad-body": 400,
    "upstream-503": 503,
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Load:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.counts: collections.Counter[str] = collections.Counter()
        self.wrong: collections.Counter[str] = collections.Counter()

    async def one(
        self, kind: str, n: int, http: aiohttp.ClientSession, direct: grpc.aio.Channel, envoy: grpc.aio.Channel
    ) -> None:
        stack = self.stack
        words = " ".join(f"w{(n * 7 + i) % 97}" for i in range(5 + n % 40))
        body = {"model": "echo-1", "messages": [{"role": "user", "content": words}], "max_tokens": 64}
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        url = f"{stack.http_base}/api/v1/chat/completions"
        status: int
        if kind in ("grpc", "grpc-stream", "grpc-envoy"):
            request = chat_pb2.CreateChatCompletionRequest(
                model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text=words)], max_tokens=64
            )
            stub = chat_pb2_grpc.ChatServiceStub(envoy if kind == "grpc-envoy" else direct)
            metadata = (("authorization", f"Bearer {stack.api_key}"),)
            try:
                if kind == "grpc-stream":
                    chunks = [
                        chunk async for chunk in stub.StreamChatCompletion(request, metadata=metadata, timeout=30)
                    ]
                    status = 0 if chunks and chunks[-1].usage.completion_tokens else -1
                else:
                    reply = await stub.CreateChatCompletion(request, metadata=metadata, timeout=30)
                    status = 0 if reply.choices[0].message.content else -1
            except grpc.aio.AioRpcError as error:
                status = error.code().value[0]
        else:
            if kind == "sse":
                body["stream"] = True
            elif kind == "bad-key":
                headers["Authorization"] += "x"
            elif kind == "bad-model":
                body["model"] = f"no-such-model-{n % 5}"
            elif kind == "bad-body":
                body["temperature"] = "hot"
            elif kind == "upstream-503":
                body["model"] = "down-1"
            async with http.post(url, json=body, headers=headers) as response:
                data = await response.read()
                status = response.status
                complete = data.endswith(b"data: [DONE]\n\n") if kind == "sse" else bool(json.loads(data))
                if not complete:
                    status = -1
        self.counts[kind] += 1
        if status != EXPECTED[kind]:
            self.wrong[f"{kind}:{status}"] += 1

    async def worker(
        self, index: int, until: float, http: aiohttp.ClientSession, direct: grpc.aio.Channel, envoy: grpc.aio.Channel
    ) -> None:
        n = index
        while time.monotonic() < until:
            await self.one(KINDS[n % len(KINDS)], n, http, direct, envoy)
            n += 1

    async def run(self, seconds: float, workers: int) -> None:
        until = time.monotonic() + seconds
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
            grpc.aio.insecure_channel(self.stack.grpc_target) as direct,
            grpc.aio.insecure_channel(self.stack.envoy_target) as envoy,
        ):
            await asyncio.gather(*(self.worker(i, until, http, direct, envoy) for i in range(workers)))


def requests_in_metrics(stack: Stack) -> float:
    port = stack.env["MODELWAY_OPS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "modelway_requests"
        for sample in family.samples
        if sample.name == "modelway_requests_total"
    )


def usage_rows(stack: Stack) -> int:
    with connect_db(stack.db_path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM usage").fetchone()
    return int(count)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "120"))
    workers = int(os.environ.get("SOAK_WORKERS", "12"))
    max_growth = float(os.environ.get("SOAK_MAX_GROWTH", "0.10"))
    warmup = max(5.0, seconds / 10)
    down = FakeUpstream(lambda _: Json({"error": {"message": "overloaded", "type": "server_error"}}, status=503))
    down.start()
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-soak-") as workdir:
            config = TEST_CONFIG + DOWN.format(base=down.base_url)
            with running_stack(Path(workdir), config) as stack:
                assert stack.server is not None
                pid = stack.server.pid
                rows_before = usage_rows(stack)
                warm = Load(stack)
                asyncio.run(warm.run(warmup, workers))
                time.sleep(1)
                start = rss_kib(pid)
                load = Load(stack)
                began = time.monotonic()
                asyncio.run(load.run(seconds, workers))
                elapsed = time.monotonic() - began
                time.sleep(1)
                end = rss_kib(pid)
                calls = sum(warm.counts.values()) + sum(load.counts.values())
                deadline = time.monotonic() + 10
                while usage_rows(stack) - rows_before < calls and time.monotonic() < deadline:
                    time.sleep(0.1)
                rows = usage_rows(stack) - rows_before
                counted = requests_in_metrics(stack)
    finally:
        down.stop()

    growth = (end - start) / start
    total = sum(load.counts.values())
    print(
        f"soak: {elapsed:.0f} s, {workers} workers, {total} calls ({total / elapsed:.0f}/s), "
        f"after a {warmup:.0f} s warm-up"
    )
    print("  calls by kind: " + ", ".join(f"{kind} {load.counts[kind]}" for kind in KINDS))
    print(f"  usage rows {rows}, modelway_requests_total {counted:.0f}, calls made {calls}")
    print(f"  server RSS: start {start / 1024:.1f} MiB, end {end / 1024:.1f} MiB, growth {growth:+.1%}")
    failures = []
    wrong = warm.wrong + load.wrong
    if wrong:
        failures.append(f"unexpected answers: {dict(wrong)}")
    if rows != calls or counted != calls:
        failures.append(f"calls {calls}, usage rows {rows}, metrics {counted:.0f}: they must agree")
    if growth > max_growth:
        failures.append(f"RSS grew {growth:.1%}, more than {max_growth:.0%}")
    for failure in failures:
        print(f"soak FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("soak passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
