"""The systems under test, each started on the one mock upstream and timed from start to its first good answer.

(a) the mock itself, (b) the floor (bench/floor.py behind modelway's own
rendered Envoy configuration), (c)+(d) modelway as `modelway up` runs it
(server + Envoy; REST through Envoy, native gRPC straight to the server),
(e) the LiteLLM proxy (one worker, no database).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.load import MARKS, Target
from bench.mock import PATHS, MockUpstream
from bench.procs import ProcessTree
from modelway.config import ServerConfig
from modelway.edge import EdgeFiles, Envoy, admin_call

__all__ = [
    "MODELS",
    "GrpcTarget",
    "System",
    "bench_key",
    "free_port",
    "litellm_config",
    "modelway_config",
    "start_floor",
    "start_litellm",
    "start_mock",
    "start_modelway",
    "wait_first_answer",
]

# The model each system is asked for, per mock behaviour; each points at the mock path of that behaviour.
MODELS = {mode: f"bench-{mode}" for mode in PATHS}
_READY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """Where a native gRPC load calls: the server's address and the Authorization metadata."""

    address: str
    auth: str


@dataclass(frozen=True, slots=True)
class System:
    """One running system: its processes, how to reach it, how long it took to answer, and how to stop it."""

    name: str
    tree: ProcessTree
    rest: Target
    ready_seconds: float
    stop: Callable[[], None]
    native: GrpcTarget | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct ports, each the start of a run of `count` free ones below the ephemeral range
    (worker i listens on base + i), so no run meets another or an outgoing connection's port."""
    taken: set[int] = set()
    bases: list[int] = []
    for base in range(20000 + secrets.randbelow(10000), 32768 - count, count):
        run = range(base, base + count)
        if taken.intersection(run) or not all(_bindable(port) for port in run):
            continue
        bases.append(base)
        taken.update(run)
        if len(bases) == count:
            return bases
    raise RuntimeError(f"no {count} runs of {count} free ports below 32768")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(target: Target) -> bool:
    """Whether one non-stream chat call gets a complete answer now."""
    request = urllib.request.Request(
        target.base_url + target.path.replace("{mode}", "json"),
        data=target.body("json").encode(),
        headers={"Content-Type": "application/json", **({"Authorization": target.auth} if target.auth else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200 and MARKS["json"].encode() in response.read()
    except (OSError, urllib.error.HTTPError):
        return False


def wait_first_answer(target: Target, started: float, processes: list[subprocess.Popen[bytes]], what: str) -> float:
    """Seconds from `started` to the first complete answer; fails when a process exits or time runs out."""
    while time.monotonic() - started < _READY_TIMEOUT:
        if _answers(target):
            return time.monotonic() - started
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with status {process.returncode} before answering")
        time.sleep(0.02)
    raise RuntimeError(f"{what} gave no good answer within {_READY_TIMEOUT:.0f}s")


def _terminate(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_mock(mock: MockUpstream) -> System:
    """(a) The mock itself; its start-to-ready time is measured once it answers."""
    started = time.monotonic()
    target = Target(f"http://127.0.0.1:{mock.port}", "/{mode}/v1/chat/completions", "", MODELS)
    ready = wait_first_answer(target, started, [mock.process], "the mock")
    return System("mock (direct)", ProcessTree((mock.process.pid,)), target, ready, lambda: None)


def _routes(mock: MockUpstream) -> list[str]:
    return [f"{MODELS[mode]}={mock.url(mode)}" for mode in PATHS]


def start_floor(mock: MockUpstream, root: Path, workdir: Path) -> System:
    """(b) bench/floor.py behind modelway's Envoy configuration, rendered for the floor's port."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerConfig(http_port=free_port(), grpc_port=free_port(), ops_port=free_port())
    started = time.monotonic()
    args = [sys.executable, "-m", "bench.floor", "--port", str(server.grpc_port)]
    for route in _routes(mock):
        args += ["--route", route]
    with open(workdir / "floor.log", "ab") as log:
        floor = subprocess.Popen(args, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    envoy = Envoy.start(server, EdgeFiles.in_repo(root, workdir), drain_seconds=1, base_id=server.http_port)
    target = Target(f"http://127.0.0.1:{server.http_port}", "/v1/chat/completions", "", MODELS)

    def stop() -> None:
        _terminate(floor)
        envoy.stop()

    try:
        ready = wait_first_answer(target, started, [floor, envoy.process], "the floor")
    except BaseException:
        stop()
        raise
    return System("floor", ProcessTree((floor.pid, envoy.process.pid)), target, ready, stop)


def modelway_config(mock: MockUpstream, store: Path) -> str:
    """An openai-kind provider per mock behaviour, priced models, and limits far above what the load reaches."""
    providers = "".join(
        f'\n[[providers]]\nname = "mock-{mode}"\nkind = "openai"\nbase_url = "{mock.url(mode)}"\n'
        f'\n[[models]]\nid = "{MODELS[mode]}"\nprovider = "mock-{mode}"\nupstream_model = "mock-1"\n'
        "max_output_tokens = 1024\ninput_credits_per_1k = 1\noutput_credits_per_1k = 2\n"
        for mode in PATHS
    )
    return f"""
[server]
shutdown_grace_seconds = 2

[store]
path = "{store}"

[keys]
prefix = "mwb-"

[limits]
global_requests_per_minute = 100000000
default_plan = "bench"

[plans.bench]
chat_requests_per_minute = 100000000
image_requests_per_minute = 1000
max_keys = 10
daily_token_budget = 1000000000000
max_input_tokens = 100000

[routing]
retries = 0
{providers}"""


def _modelway_cli(config: Path, env: dict[str, str], *args: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "modelway", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def bench_key(config: Path, env: dict[str, str]) -> str:
    """An account on the bench plan with credits far above any run, and its key's secret (by the CLI)."""
    account = _modelway_cli(config, env, "accounts", "create", "--name", "bench", "--plan", "bench", "--credits", "1e9")
    return _modelway_cli(config, env, "keys", "create", "--account", account["id"], "--name", "bench")["secret"]


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server for the workers' shared limits and credits: loopback, a free port, no persistence."""
    port = free_port()
    with open(workdir / "redis.log", "ab") as log:
        redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return redis, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    redis.kill()
    raise RuntimeError(f"redis-server did not listen on port {port} (see {workdir / 'redis.log'})")


def start_modelway(mock: MockUpstream, root: Path, workdir: Path, workers: int | None = None) -> System:
    """(c)+(d) `modelway up` with a key (credits and limits on, set far above the load); ready = first answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "modelway.db"
    for stale in workdir.glob("modelway.db*"):
        stale.unlink()
    config = workdir / "modelway.toml"
    config.write_text(modelway_config(mock, store))
    # Worker i listens on grpc_port + i and ops_port + i: runs of free ports, apart from each other.
    grpc_port, ops_port, http_port = free_ports(max(3, workers or 1))[:3]
    env = {
        **os.environ,
        "MODELWAY_GRPC_PORT": str(grpc_port),
        "MODELWAY_HTTP_PORT": str(http_port),
        "MODELWAY_OPS_PORT": str(ops_port),
    }
    # Several workers share their limits and credits through Redis (refused without it); its CPU counts.
    redis = None
    if workers is not None:
        redis, env["MODELWAY_REDIS_URL"] = _start_redis(workdir)
    # The account and key are made before the clock starts, as an operator would have them.
    key = bench_key(config, env)
    args = [sys.executable, "-m", "modelway", "--config", str(config), "up", "--root", str(root)]
    args += ["--workdir", str(workdir)]
    name = "modelway"
    if workers is not None:
        args += ["--workers", str(workers)]
        name = f"modelway --workers {workers}"
    started = time.monotonic()
    with open(workdir / "modelway.log", "ab") as log:
        # Its own session, as a terminal runs it; SIGTERM drains it and it stops its Envoy.
        up = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    target = Target(f"http://127.0.0.1:{env['MODELWAY_HTTP_PORT']}", "/v1/chat/completions", f"Bearer {key}", MODELS)

    def stop() -> None:
        _terminate(up)
        # An Envoy left by an `up` that did not drain (killed) is stopped through its admin socket.
        with contextlib.suppress(OSError):
            admin_call(EdgeFiles.in_repo(root, workdir).admin_socket, "POST", "/quitquitquit")
        if redis is not None:
            _terminate(redis)

    try:
        ready = wait_first_answer(target, started, [up], name)
    except BaseException:
        stop()
        raise
    native = GrpcTarget(f"127.0.0.1:{grpc_port}", f"Bearer {key}")
    roots = (up.pid,) if redis is None else (up.pid, redis.pid)
    return System(name, ProcessTree(roots), target, ready, stop, native)


def litellm_config(mock: MockUpstream) -> str:
    """One model entry per mock behaviour (JSON, which YAML reads); no database."""
    entries = [
        {
            "model_name": MODELS[mode],
            "litellm_params": {"model": "openai/mock-1", "api_base": mock.url(mode), "api_key": "sk-bench"},
        }
        for mode in PATHS
    ]
    return json.dumps({"model_list": entries}, indent=1)


def start_litellm(mock: MockUpstream, venv: Path, workdir: Path) -> System:
    """(e) The LiteLLM proxy from its own virtualenv: one worker, no database, the bench models."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(mock))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # A master key (it refuses to start without one); with no database, checking it is a comparison.
    master_key = "sk-" + secrets.token_hex(32)
    env["LITELLM_MASTER_KEY"] = master_key
    # The model price map ships in the wheel; without this LiteLLM fetches it from the network at start.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    args = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "1"]
    started = time.monotonic()
    with open(workdir / "litellm.log", "ab") as log:
        proxy = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = Target(f"http://127.0.0.1:{port}", "/v1/chat/completions", f"Bearer {master_key}", MODELS)

    def stop() -> None:
        _terminate(proxy)

    try:
        ready = wait_first_answer(target, started, [proxy], "the LiteLLM proxy")
    except BaseException:
        stop()
        raise
    return System("LiteLLM", ProcessTree((proxy.pid,)), target, ready, stop)
