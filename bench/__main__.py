"""`make bench` (python -m bench): starts the mock and the systems, loads them, prints and saves the report.

    python -m bench [--quick] [--seconds S] [--repeats N] [--warmup S] [--systems a,b] [--workers N]
                    [--litellm-venv PATH] [--out build/bench/results.json]

Only one system is under load at a time, with the machine (2 cores, shared
with whatever else runs) and the mock to itself. The floor and modelway,
whose ratio is the headline, are up at once and take turns in each
scenario; the other systems run one after another.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadResult, grpc_load, median_result, run_wrk
from bench.mock import MockUpstream
from bench.report import MODELWAY, NATIVE, REST, Report, Row, render
from bench.systems import MODELS, System, free_port, start_floor, start_litellm, start_mock, start_modelway

__all__ = ["Settings", "main"]

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (("json", 1), ("json", 16), ("json", 64), ("sse", 1), ("sse", 16), ("sse", 64), ("slow", 64))
ALL_SYSTEMS = ("mock", "floor", "modelway", "litellm", "workers")
_MB = 1024 * 1024
# What the `--workers` row says until `modelway up` can run several server processes.
NEEDS_SCALE_OUT = "needs scale-out (issue 10): `modelway up --workers N` does not exist yet"


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float
    repeats: int
    warmup_seconds: float
    systems: tuple[str, ...]
    workers: int
    litellm_venv: Path
    out: Path


Load = Callable[[str, int, float], LoadResult]


# One interface of one running system, as the scenarios load it.
Contender = tuple[System, str, Load]


def _measure(contenders: Sequence[Contender], settings: Settings) -> list[Row]:
    """Every scenario on each contender: a warm-up, then the repeats, median of each figure.

    The contenders take turns within each scenario (all warm-ups, then the
    first run of each, the second of each, ...): on a machine whose speed
    drifts over minutes, systems whose ratio is the figure are then measured
    under the same drift, not a quarter of an hour apart.
    """
    rows: list[list[Row]] = [[] for _ in contenders]  # each contender's, in scenario order
    trees = list(dict.fromkeys(system.tree for system, _, _ in contenders))
    for mode, concurrency in SCENARIOS:
        for _, _, load in contenders:
            load(mode, concurrency, settings.warmup_seconds)
        results: list[list[LoadResult]] = [[] for _ in contenders]
        server_ms: list[list[float]] = [[] for _ in contenders]
        envoy_ms: list[list[float]] = [[] for _ in contenders]
        for _ in range(settings.repeats):
            for index, (system, _, load) in enumerate(contenders):
                for tree in trees:  # the others too: what a load left behind would run beside this one
                    tree.settle()
                before = system.tree.cpu()
                result = load(mode, concurrency, settings.seconds)
                used = system.tree.cpu() - before
                results[index].append(result)
                per_request = 1000 / max(1, result.requests)
                server_ms[index].append(used.server * per_request)
                envoy_ms[index].append(used.envoy * per_request)
        for index, (system, via, _) in enumerate(contenders):
            server_rss, envoy_rss = system.tree.rss()
            row = Row(
                system=system.name,
                via=via,
                mode=mode,
                concurrency=concurrency,
                load=median_result(results[index]),
                server_cpu_ms=statistics.median(server_ms[index]),
                envoy_cpu_ms=statistics.median(envoy_ms[index]),
                server_rss_mb=server_rss / _MB,
                envoy_rss_mb=envoy_rss / _MB,
            )
            print(
                f"  {row.system} {via} {mode} c{concurrency}: {row.load.rps:.0f} req/s, p50 {row.load.p50_ms:.2f} ms, "
                f"p99 {row.load.p99_ms:.2f} ms, CPU/req server {row.server_cpu_ms:.2f} ms + Envoy "
                f"{row.envoy_cpu_ms:.2f} ms, errors {row.load.errors}",
                flush=True,
            )
            rows[index].append(row)
    return [row for contender_rows in rows for row in contender_rows]


def _rest(system: System) -> Load:
    def load(mode: str, concurrency: int, seconds: float) -> LoadResult:
        return run_wrk(system.rest, mode, concurrency, seconds)

    return load


def _native(system: System) -> Load:
    native = system.native
    if native is None:
        raise ValueError(f"{system.name} has no native gRPC interface")

    def load(mode: str, concurrency: int, seconds: float) -> LoadResult:
        return grpc_load(native.address, native.auth, MODELS[mode], mode == "sse", concurrency, seconds)

    return load


def _up_has_workers() -> bool:
    """Whether this checkout's `modelway up` takes --workers (the scale-out work)."""
    done = subprocess.run(
        [sys.executable, "-m", "modelway", "up", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return "--workers" in done.stdout


def _machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{int(memory) / 1024 / 1024:.1f} GiB",
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# A system to start and the interfaces of it to load.
Start = tuple[Callable[[], System], Sequence[tuple[str, Callable[[System], Load]]]]


def _run_together(starts: Sequence[Start], settings: Settings) -> tuple[list[System], list[Row]]:
    """Starts the systems one after another (each ready time its own), then measures them taking turns."""
    systems: list[System] = []
    try:
        contenders: list[Contender] = []
        for start, interfaces in starts:
            system = start()
            systems.append(system)
            print(f"{system.name}: first good answer {system.ready_seconds:.2f} s after start", flush=True)
            contenders += [(system, via, make(system)) for via, make in interfaces]
        rows = _measure(contenders, settings)
    finally:
        for system in systems:
            system.stop()
    return systems, rows


def run(settings: Settings, command: str) -> Report:
    began = time.monotonic()
    machine = _machine()
    workdir = settings.out.parent.resolve()
    rows: list[Row] = []
    ready: dict[str, float] = {}
    not_measured: dict[str, str] = {}
    mock = MockUpstream.start(free_port(), workdir / "mock")
    try:
        # Systems in one group take turns in each scenario: the floor and modelway, whose ratio is the
        # headline, are measured together.
        groups: list[list[tuple[str, Start]]] = [
            [("mock", (lambda: start_mock(mock), [(REST, _rest)]))],
            [
                ("floor", (lambda: start_floor(mock, ROOT, workdir / "floor"), [(REST, _rest)])),
                (
                    "modelway",
                    (lambda: start_modelway(mock, ROOT, workdir / "modelway"), [(REST, _rest), (NATIVE, _native)]),
                ),
            ],
            [("litellm", (lambda: start_litellm(mock, settings.litellm_venv, workdir / "litellm"), [(REST, _rest)]))],
        ]
        if "workers" in settings.systems:
            if _up_has_workers():
                workers = settings.workers
                start_workers: Start = (
                    lambda: start_modelway(mock, ROOT, workdir / "modelway-workers", workers),
                    [(REST, _rest)],
                )
                groups.append([("workers", start_workers)])
            else:
                not_measured[f"{MODELWAY} --workers {settings.workers}"] = NEEDS_SCALE_OUT
        for group in groups:
            chosen = [start for key, start in group if key in settings.systems]
            if not chosen:
                continue
            systems, measured = _run_together(chosen, settings)
            ready.update((system.name, system.ready_seconds) for system in systems)
            rows += measured
    finally:
        mock.stop()
    return Report(
        machine=machine,
        command=command,
        settings={
            "seconds": settings.seconds,
            "repeats": settings.repeats,
            "warmup_seconds": settings.warmup_seconds,
            "systems": list(settings.systems),
        },
        rows=tuple(rows),
        ready_seconds=ready,
        not_measured=not_measured,
        elapsed_seconds=time.monotonic() - began,
    )


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s, 1 repeat, 1 s warm-up")
    parser.add_argument("--seconds", type=float, help="each measured run (default 15)")
    parser.add_argument("--repeats", type=int, help="runs per scenario, median reported (default 3)")
    parser.add_argument("--warmup", type=float, help="the warm-up before each scenario (default 3)")
    parser.add_argument("--systems", type=_systems, default=ALL_SYSTEMS, help=f"subset of {','.join(ALL_SYSTEMS)}")
    parser.add_argument("--workers", type=int, default=2, help="server processes for the `--workers` row")
    parser.add_argument("--litellm-venv", type=Path, default=ROOT / "build" / "bench" / "litellm-venv")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "results.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings(
        seconds=args.seconds or (3.0 if args.quick else 15.0),
        repeats=args.repeats or (1 if args.quick else 3),
        warmup_seconds=args.warmup or (1.0 if args.quick else 3.0),
        systems=args.systems,
        workers=args.workers,
        litellm_venv=args.litellm_venv,
        out=args.out,
    )
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    command = "make bench" + "".join(
        f" {name}={shlex.quote(value)}" for name, value in os.environ.items() if name.startswith("BENCH_") and value
    )
    report = run(settings, command)
    text = render(report)
    print("\n" + text)
    settings.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    with contextlib.suppress(OSError):
        settings.out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwritten: {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
