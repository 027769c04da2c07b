"""The pipeline alone: modelway's REST chat servicer and the floor's, driven in-process against the mock.

    python -m bench.inproc [--systems floor,modelway] [--mode json|sse] [--concurrency 16]
                           [--calls 2000] [--rounds 7] [--profile build/bench/inproc.prof] [--workdir DIR]

No gRPC server and no Envoy: each servicer method is called directly, on
the uvloop loop the server uses, with a stand-in for grpc.aio's context, by
N concurrent callers over one mock upstream (bench/mock.py). modelway runs
as `serve` builds it (store, limits, credits, usage rows, metrics, logs) on
a fresh SQLite file, with the bench's key. What is left is the CPU the
pipeline itself costs per call, the figure to watch when changing it: on a
shared machine whose speed drifts, the whole benchmark cannot tell a change
of a few percent from noise. The minimum of several rounds is the figure;
compare runs made one right after the other (on the development machine
their minimums agreed within about 3%, runs an hour apart within 10%).
`--profile` writes a cProfile of the last system's rounds (CPU time, not
wall time); its figures then include the profiler's cost, and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import aiohttp
import uvloop
from google.api import httpbody_pb2

from bench.floor import FloorServicer
from bench.load import MARKS, Target
from bench.mock import MockUpstream
from bench.systems import MODELS, bench_key, free_port, modelway_config
from modelway.app import Gateway, freeze_startup_heap
from modelway.config import load_config
from modelway.ops.logs import configure_logging
from modelway.services.chat import ChatRestServicer

__all__ = ["RoundResult", "main", "measure"]

SYSTEMS = ("floor", "modelway")


class ChatServicer(Protocol):
    def CreateChatCompletion(self, request: httpbody_pb2.HttpBody, context: Any) -> AsyncIterator[Any]: ...


Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One system's rounds: CPU microseconds per call (the loop's thread; the whole process), bad answers."""

    system: str
    main_us: tuple[float, ...]
    process_us: tuple[float, ...]
    errors: int
    profiled: bool = False  # the figures then include the profiler's own cost

    def line(self) -> str:
        return (
            f"{self.system}: event loop min {min(self.main_us):.0f} median {statistics.median(self.main_us):.0f}"
            f" us per call; process min {min(self.process_us):.0f} median {statistics.median(self.process_us):.0f};"
            f" errors {self.errors}" + (" (profiled: the figures include cProfile's own cost)" if self.profiled else "")
        )


# What measure() hands each system's setup: run the rounds on this servicer, with this call metadata.
Run = Callable[[ChatServicer, Metadata], Awaitable[RoundResult]]


class _Context:
    """What the servicers ask of grpc.aio's context, for a call that came through Envoy's transcoder."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> None:
        return None

    async def send_initial_metadata(self, metadata: object) -> None:
        return None

    async def abort(self, code: object, details: str = "", trailing_metadata: object = ()) -> NoReturn:
        raise RuntimeError(f"the call failed: {code} {details}")


async def _rounds(
    system: str,
    servicer: ChatServicer,
    metadata: Metadata,
    body: bytes,
    mark: bytes,
    *,
    concurrency: int,
    calls: int,
    rounds: int,
    profile: Path | None,
) -> RoundResult:
    request = httpbody_pb2.HttpBody(content_type="application/json", data=body)
    errors = 0

    async def one() -> None:
        nonlocal errors
        answer = b""
        try:
            async for message in servicer.CreateChatCompletion(request, _Context(metadata)):
                answer += message.data
        except RuntimeError:
            errors += 1
            return
        if mark not in answer:
            errors += 1

    async def caller(count: int) -> None:
        for _ in range(count):
            await one()

    async def round_of(total: int) -> None:
        await asyncio.gather(*(caller(total // concurrency) for _ in range(concurrency)))

    await round_of(max(concurrency, calls // 4))  # warm-up: connections, caches, the first rows (errors count)
    profiler = cProfile.Profile(time.thread_time) if profile else None
    main_us: list[float] = []
    process_us: list[float] = []
    done = calls // concurrency * concurrency
    for _ in range(rounds):
        thread, process = time.thread_time(), time.process_time()
        if profiler:
            profiler.enable()
        await round_of(calls)
        if profiler:
            profiler.disable()
        main_us.append((time.thread_time() - thread) / done * 1e6)
        process_us.append((time.process_time() - process) / done * 1e6)
    if profiler and profile:
        profiler.dump_stats(profile)
    return RoundResult(system, tuple(main_us), tuple(process_us), errors, profiled=profiler is not None)


async def _floor(mock: MockUpstream, run: Run) -> RoundResult:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await run(FloorServicer(session, {MODELS[m]: mock.url(m) for m in MODELS}), ())


async def _modelway(mock: MockUpstream, workdir: Path, run: Run) -> RoundResult:
    config_file = workdir / "modelway.toml"
    config_file.write_text(modelway_config(mock, workdir / "modelway.db"))
    ports = {f"MODELWAY_{name}_PORT": str(free_port()) for name in ("GRPC", "HTTP", "OPS")}
    env = {**os.environ, **ports}
    key = bench_key(config_file, env)
    config = load_config(config_file, env)
    with open(workdir / "modelway.log", "a") as log:
        configure_logging(config, log)  # the per-call log line is part of the pipeline's cost
        gateway = Gateway(config)
        await gateway.start()
        freeze_startup_heap()  # as a serving process does after start-up
        try:
            metadata = (("authorization", f"Bearer {key}"), ("x-envoy-original-path", "/v1/chat/completions"))
            return await run(ChatRestServicer(gateway.pipeline), metadata)
        finally:
            await gateway.stop()


def measure(
    systems: Sequence[str],
    mode: str,
    *,
    concurrency: int,
    calls: int,
    rounds: int,
    profile: Path | None = None,
    workdir: Path | None = None,
) -> list[RoundResult]:
    """Each system's rounds, one system after the other, on one mock."""
    with tempfile.TemporaryDirectory() as scratch:
        base = workdir or Path(scratch)
        mock = MockUpstream.start(free_port(), base / "mock")
        try:
            body = Target("", "", "", MODELS).body(mode).encode()
            mark = MARKS[mode].encode()
            results = []
            for system in systems:

                def run(servicer: ChatServicer, metadata: Metadata, system: str = system) -> Awaitable[RoundResult]:
                    return _rounds(
                        system,
                        servicer,
                        metadata,
                        body,
                        mark,
                        concurrency=concurrency,
                        calls=calls,
                        rounds=rounds,
                        profile=profile if system == systems[-1] else None,
                    )

                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    if system == "floor":
                        results.append(runner.run(_floor(mock, run)))
                    else:
                        (base / system).mkdir(parents=True, exist_ok=True)
                        results.append(runner.run(_modelway(mock, base / system, run)))
            return results
        finally:
            mock.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"a subset of {','.join(SYSTEMS)}, in order")
    parser.add_argument("--mode", choices=("json", "sse"), default="json")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", type=Path, help="a cProfile (CPU time) of the last system's rounds")
    parser.add_argument(
        "--workdir", type=Path, help="where the mock and modelway keep their files (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.calls < args.concurrency:
        parser.error("--concurrency and --rounds must be at least 1, and --calls at least --concurrency")
    systems = tuple(name for name in args.systems.split(",") if name)
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; known: {', '.join(SYSTEMS)}")
    results = measure(
        systems,
        args.mode,
        concurrency=args.concurrency,
        calls=args.calls,
        rounds=args.rounds,
        profile=args.profile,
        workdir=args.workdir,
    )
    for result in results:
        print(f"{args.mode} c{args.concurrency}, {args.rounds} rounds of {args.calls} calls, {result.line()}")
    return 1 if any(result.errors for result in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
