"""Shared fixtures: a real modelway server and a real Envoy, started once per session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelway.app import Gateway
from modelway.config import ALL_PERMISSIONS, load_config
from modelway.edge import EdgeFiles, Envoy, admin_call
from tests.real.postgres import PgDatabase, PostgresServer, postgres_bin

ROOT = Path(__file__).resolve().parent.parent

TEST_CONFIG = """
[server]
shutdown_grace_seconds = 5

[store]
refresh_seconds = 0.2
usage_flush_seconds = 0.05

[keys]
prefix = "mwt-"

[limits]
global_requests_per_minute = 1000000
default_plan = "tester"

[plans.tester]
chat_requests_per_minute = 1000000
image_requests_per_minute = 1000
max_keys = 1000
daily_token_budget = 1000000000
max_input_tokens = 100000

[plans.small]
chat_requests_per_minute = 10
image_requests_per_minute = 2
max_keys = 2
daily_token_budget = 200
max_input_tokens = 300

[[providers]]
name = "echo"
kind = "echo"

[[providers]]
name = "echo-slow"
kind = "echo"
token_delay_ms = 20

[[models]]
id = "echo-1"
provider = "echo"
created = 1767225600
max_output_tokens = 4096
input_credits_per_1k = 1
output_credits_per_1k = 2

[[models]]
id = "echo-mini"
provider = "echo"
created = 1767225600
max_output_tokens = 8

[[models]]
id = "echo-slow"
provider = "echo-slow"
created = 1767225600
input_credits_per_1k = 1
output_credits_per_1k = 2
"""


# Which store the stacks use: "sqlite" (a file per stack) or "postgres" (a database per stack on one
# PostgreSQL server the session starts). `make test` runs the suite once with each.
TEST_STORE = os.environ.get("MODELWAY_TEST_STORE", "sqlite")
if TEST_STORE not in ("sqlite", "postgres"):
    raise pytest.UsageError(f'MODELWAY_TEST_STORE must be "sqlite" or "postgres", got {TEST_STORE!r}')


class SessionPostgres:
    """The session's PostgreSQL server, started on first use, so a run that needs none starts none."""

    server: PostgresServer | None = None

    @classmethod
    def get(cls) -> PostgresServer:
        if cls.server is None:
            bin_dir = postgres_bin()
            if bin_dir is None:
                pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)")
            cls.server = PostgresServer.create(bin_dir)
        return cls.server


@pytest.fixture(scope="session", autouse=True)
def _postgres_session() -> Iterator[None]:
    yield
    if SessionPostgres.server is not None:
        SessionPostgres.server.destroy()
        SessionPostgres.server = None


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The real PostgreSQL server of this session (skipped only when it is not installed)."""
    return SessionPostgres.get()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which the test may stop and start."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl; apt-get install postgresql)")
    server = PostgresServer.create(bin_dir)
    try:
        yield server
    finally:
        server.destroy()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distinct_free_ports(count: int) -> list[int]:
    """`count` free ports, all different: each is held while the next is chosen (a port let go can be
    handed out again at once, and a config whose ports collide is refused)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass
class Stack:
    """One running gateway: a grpc.aio server process and an Envoy in front of it."""

    workdir: Path
    config_path: Path
    env: dict[str, str]
    http_port: int
    grpc_port: int
    api_key: str
    account_id: str = ""
    server: subprocess.Popen[bytes] | None = None
    envoy: Envoy | None = None

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def envoy_target(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def db_path(self) -> Any:
        """The stack's store: a SQLite file's Path, or a PgDatabase; tests open it with connect_db."""
        if "MODELWAY_STORE_URL" in self.env:
            return PgDatabase(self.env["MODELWAY_STORE_URL"])
        return Path(self.env["MODELWAY_DB"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "modelway", "--config", str(self.config_path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:  # with what it said, which CalledProcessError would not show
            raise AssertionError(f"modelway {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def create_account(self, name: str, plan: str = "tester", credits: float = 1_000_000) -> str:
        out = self.cli("accounts", "create", "--name", name, "--plan", plan, "--credits", str(credits)).stdout
        return out.split(":", 1)[1].strip()

    def create_key(self, name: str, account: str = "", *options: str) -> tuple[str, str]:
        """Creates a key through the CLI (every permission unless told); returns (id, secret)."""
        if "--permissions" not in options:
            options = (*options, "--permissions", ",".join(ALL_PERMISSIONS))
        out = self.cli("keys", "create", "--account", account or self.account_id, "--name", name, *options).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("("))
        return fields["id"].strip(), fields["secret"].strip()

    def start_server(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115
        self.server = subprocess.Popen(
            [sys.executable, "-m", "modelway", "--config", str(self.config_path), "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_for(lambda: _grpc_serving(self.grpc_target), "gRPC server", self)

    def stop_server(self) -> int:
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        code = self.server.wait(timeout=30)
        self.server = None
        return code

    @property
    def edge_files(self) -> EdgeFiles:
        return EdgeFiles.in_repo(ROOT, self.workdir)

    def start_envoy(self) -> None:
        config = load_config(self.config_path, self.env)
        self.envoy = envoy = Envoy.start(
            config.server, self.edge_files, drain_seconds=config.server.shutdown_grace_seconds, base_id=self.http_port
        )
        _wait_for(envoy.ready, "Envoy", self)


def _grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_for(ready: object, what: str, stack: Stack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.05)
    logs = "\n".join(p.read_text()[-3000:] for p in stack.workdir.glob("*.log"))
    raise RuntimeError(f"{what} did not become ready within {timeout}s\n{logs}")


def _stack_env(workdir: Path, postgres: PostgresServer | None = None) -> dict[str, str]:
    """Free ports and a database of its own (a SQLite file, or a fresh database on `postgres`,
    by default the session's when the run is on PostgreSQL)."""
    grpc_port, http_port, ops_port = distinct_free_ports(3)
    env = {
        **os.environ,
        "MODELWAY_GRPC_PORT": str(grpc_port),
        "MODELWAY_HTTP_PORT": str(http_port),
        "MODELWAY_OPS_PORT": str(ops_port),
    }
    if postgres is None and TEST_STORE == "postgres":
        postgres = SessionPostgres.get()
    if postgres is not None:
        env.pop("MODELWAY_DB", None)
        env["MODELWAY_STORE_URL"] = postgres.database().url
        env["MODELWAY_DATA_DIR"] = str(workdir)
    else:
        env["MODELWAY_DB"] = str(workdir / "modelway.db")
    return env


def _new_stack(
    workdir: Path, config_path: Path, *, with_account: bool = True, postgres: PostgresServer | None = None
) -> Stack:
    """Ports, database and (unless told) a first account with a key that may do everything."""
    env = _stack_env(workdir, postgres)
    stack = Stack(
        workdir=workdir,
        config_path=config_path,
        env=env,
        http_port=int(env["MODELWAY_HTTP_PORT"]),
        grpc_port=int(env["MODELWAY_GRPC_PORT"]),
        api_key="",
    )
    if with_account:
        stack.account_id = stack.create_account("tests")
        stack.api_key = stack.create_key("tests")[1]
    return stack


def _stop_envoy(stack: Stack) -> None:
    if stack.envoy is not None:
        stack.envoy.stop()
        stack.envoy = None


@contextlib.contextmanager
def running_stack(workdir: Path, config: str, postgres: PostgresServer | None = None) -> Iterator[Stack]:
    """A server process and Envoy for `config` (its store on `postgres` if given); stopped (SIGTERM) on exit."""
    config_path = workdir / "modelway.toml"
    config_path.write_text(config)
    stack = _new_stack(workdir, config_path, postgres=postgres)
    stack.start_server()
    try:
        stack.start_envoy()
        yield stack
    finally:
        if stack.server is not None:
            stack.stop_server()
        _stop_envoy(stack)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), TEST_CONFIG) as stack:
        yield stack


@pytest.fixture(params=["direct", "envoy"])
def channel(request: pytest.FixtureRequest, stack: Stack) -> Iterator[grpc.Channel]:
    """A gRPC channel to the session's server, straight and through Envoy."""
    target = stack.grpc_target if request.param == "direct" else stack.envoy_target
    with grpc.insecure_channel(target) as channel:
        yield channel


class OffsetClock:
    """Wall time moved by a settable offset, so tests can jump to a minute's end or past midnight."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def set(self, moment: float) -> None:
        """Makes now() read `moment`, then run on in real time."""
        self.offset = moment - time.time()


@dataclass
class ClockedStack:
    """A gateway running in this process (on its own thread and loop) with an injected clock, behind Envoy."""

    stack: Stack
    clock: OffsetClock
    gateway: Gateway
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        """Runs a coroutine on the gateway's loop (for its in-memory state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockedStack]:
    workdir = tmp_path_factory.mktemp("clocked")
    config_path = workdir / "modelway.toml"
    config_path.write_text(
        TEST_CONFIG.replace("global_requests_per_minute = 1000000", "global_requests_per_minute = 40")
    )
    stack = _new_stack(workdir, config_path)
    clock = OffsetClock()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway", daemon=True)
    thread.start()

    async def start() -> Gateway:
        gateway = Gateway(load_config(config_path, stack.env), clock=clock)
        await gateway.start()
        return gateway

    gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    stack.start_envoy()
    try:
        yield ClockedStack(stack=stack, clock=clock, gateway=gateway, loop=loop)
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        _stop_envoy(stack)


@dataclass
class Up:
    """`modelway up` (what `make run` runs) as a child in its own session, as a terminal would run it.

    Signals go to its process group, as a terminal's Ctrl-C does; Envoy,
    started by it in a session of its own, does not get them.
    """

    stack: Stack
    process: subprocess.Popen[str]
    stdout: list[str]
    reader: threading.Thread

    def banner(self, timeout: float = 60) -> str:
        """Everything printed up to the end of the banner (the Ctrl-C line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = "".join(self.stdout)
            if "Ctrl-C" in text:
                return text
            if self.process.poll() is not None:
                raise AssertionError(f"modelway up exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError("modelway up printed no banner:\n" + "".join(self.stdout))

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code


def start_up(stack: Stack, *args: str) -> Up:
    with open(stack.workdir / "server.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelway", "--config", str(stack.config_path), "up", "--root", str(ROOT), *args],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    stdout: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        with process.stdout as pipe:
            stdout.extend(iter(pipe.readline, ""))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return Up(stack, process, stdout, reader)


@contextlib.contextmanager
def running_up(workdir: Path, config: str, *args: str, with_account: bool = False) -> Iterator[Up]:
    """`modelway up` on fresh ports and store, its Envoy's files in `workdir`; killed if still running at the end.

    `args` go after up's own (a later --root replaces the repository's)."""
    config_path = workdir / "modelway.toml"
    config_path.write_text(config)
    up = start_up(_new_stack(workdir, config_path, with_account=with_account), "--workdir", str(workdir), *args)
    try:
        yield up
    finally:
        if up.process.poll() is None:
            up.signal(signal.SIGKILL)
        up.wait(timeout=10)
        _kill_envoy_of(workdir)


def _kill_envoy_of(workdir: Path) -> None:
    """Stops an Envoy left behind by a killed `up` (it runs in a session of its own)."""
    with contextlib.suppress(OSError):
        admin_call(EdgeFiles.in_repo(ROOT, workdir).admin_socket, "POST", "/quitquitquit")
