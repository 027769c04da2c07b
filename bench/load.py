"""The two load generators: wrk (REST, through bench/chat.lua) and a grpc.aio client over the generated stubs."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelway.v1 import chat_pb2, chat_pb2_grpc

__all__ = [
    "MARKS",
    "LoadResult",
    "Target",
    "grpc_load",
    "median_result",
    "parse_wrk",
    "percentile",
    "run_wrk",
    "wrk_threads",
]

LUA_SCRIPT = Path(__file__).resolve().parent / "chat.lua"
# The mark of a complete answer: a stream ends in [DONE], a JSON completion carries usage.
MARKS = {"json": "usage", "sse": "[DONE]", "slow": "usage"}
_RESULT_PREFIX = "BENCH_RESULT "
# Slow systems at concurrency 64 (LiteLLM streaming) answer in seconds: a slow answer is counted, not dropped.
_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One timed run: completed requests, failed ones (wrong status or body, socket errors), latency."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how a REST load posts: base URL, path, Authorization value (or none), model per mode."""

    base_url: str
    path: str
    auth: str
    models: dict[str, str]

    def body(self, mode: str) -> str:
        body: dict[str, object] = {
            "model": self.models[mode],
            "messages": [{"role": "user", "content": "Say something short about foxes."}],
        }
        if mode == "sse":
            body["stream"] = True
        return json.dumps(body)


def wrk_threads(concurrency: int) -> int:
    """wrk threads: one per core at most, never more than connections."""
    return max(1, min(concurrency, os.cpu_count() or 1))


def parse_wrk(stdout: str) -> LoadResult:
    """The result line bench/chat.lua's done() printed; errors are bad answers plus socket errors and timeouts."""
    for line in stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            data = json.loads(line[len(_RESULT_PREFIX) :])
            socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
            return LoadResult(
                requests=data["requests"],
                errors=data["bad"] + socket_errors,
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no result line:\n{stdout[-2000:]}")


def run_wrk(target: Target, mode: str, concurrency: int, seconds: float) -> LoadResult:
    env = {
        **os.environ,
        "BENCH_PATH": target.path.replace("{mode}", mode),
        "BENCH_BODY": target.body(mode),
        "BENCH_AUTH": target.auth,
        "BENCH_MARK": MARKS[mode],
    }
    args = ["wrk", f"-t{wrk_threads(concurrency)}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
    args += [f"--timeout={_TIMEOUT_SECONDS}s", "-s", str(LUA_SCRIPT), target.base_url]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + _TIMEOUT_SECONDS + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse_wrk(done.stdout)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank), 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _grpc_request(model: str, stream: bool) -> chat_pb2.CreateChatCompletionRequest:
    request = chat_pb2.CreateChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", text="Say something short about foxes.")]
    )
    if stream:
        # The last chunk then carries the usage: the mark of a complete stream.
        request.stream = True
        request.stream_options.include_usage = True
    return request


async def _grpc_worker(
    stub: chat_pb2_grpc.ChatServiceAsyncStub,
    request: chat_pb2.CreateChatCompletionRequest,
    stream: bool,
    metadata: tuple[tuple[str, str], ...],
    until: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    while (start := time.monotonic()) < until:
        ok = False
        try:
            if stream:
                last = None
                async for chunk in stub.StreamChatCompletion(request, metadata=metadata, timeout=_TIMEOUT_SECONDS):
                    last = chunk
                ok = last is not None and last.usage.completion_tokens > 0
            else:
                reply = await stub.CreateChatCompletion(request, metadata=metadata, timeout=_TIMEOUT_SECONDS)
                ok = reply.usage.completion_tokens > 0
        except grpc.aio.AioRpcError:
            ok = False
        latencies.append(time.monotonic() - start)
        if not ok:
            errors.append(1)


async def _grpc_run(target: str, auth: str, model: str, stream: bool, concurrency: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors: list[int] = []
    metadata = (("authorization", auth),)
    request = _grpc_request(model, stream)
    # One channel (one HTTP/2 connection) as a service's client would hold, its calls multiplexed.
    async with grpc.aio.insecure_channel(target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        started = time.monotonic()
        until = started + seconds
        workers = [_grpc_worker(stub, request, stream, metadata, until, latencies, errors) for _ in range(concurrency)]
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
    return LoadResult(
        requests=len(latencies),
        errors=len(errors),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def grpc_load(target: str, auth: str, model: str, stream: bool, concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` callers on one channel, each calling again as soon as its answer is complete, for `seconds`."""
    return asyncio.run(_grpc_run(target, auth, model, stream, concurrency, seconds))


def median_result(results: list[LoadResult]) -> LoadResult:
    """The median of each figure over repeats; errors are summed (one is one too many)."""
    return LoadResult(
        requests=round(statistics.median(r.requests for r in results)),
        errors=sum(r.errors for r in results),
        seconds=statistics.median(r.seconds for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
    )
