"""A worker killed under load behind the real Envoy: health checks, outlier ejection and safe retries
keep every call that never reached it away from it, and the restarted worker serves again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from modelway.edge import EdgeFiles, admin_call
from tests.conftest import ROOT, TEST_CONFIG, Up, _kill_envoy_of, _new_stack, start_up
from tests.real.redis import RedisServer
from tests.shared.test_scale_out import _free_run
from tests.shared.test_workers import _children

WORKERS = 3
CLIENTS = 6
LOAD_SECONDS = 6.0
KILL_AFTER = 1.5
# What Envoy says when it could not hand a call to any worker: a connection refused, none healthy
# (or a stream it refused, or too many retries). A call that reached the worker before it died is
# cut instead (connection_termination).
NEVER_SENT = ("connection_failure", "no_healthy_upstream", "refused_stream", "overflow")


@dataclass(frozen=True)
class Answer:
    status: int
    request_id: str
    body: bytes
    at: float  # when it was answered, monotonic


async def _call(session: aiohttp.ClientSession, port: int, key: str) -> Answer:
    # echo-slow speaks a word every 20 ms: calls last long enough that some are in flight at the kill.
    body = {"model": "echo-slow", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}
    async with session.post(
        f"http://127.0.0.1:{port}/api/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        data = await response.read()
        return Answer(response.status, response.headers.get("x-request-id", ""), data, time.monotonic())


async def _load(
    port: int, key: str, seconds: float, during: asyncio.Future[None] | None = None, calls: int = 0
) -> list[Answer]:
    """CLIENTS callers one call after another for `seconds` (or one caller, `calls` calls)."""
    answers: list[Answer] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def client() -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                answers.append(await _call(session, port, key))

        if calls:
            answers.extend([await _call(session, port, key) for _ in range(calls)])
            return answers
        await asyncio.gather(*(client() for _ in range(CLIENTS)), *(() if during is None else (during,)))
    return answers


def _worker_ports(pid: int) -> tuple[int, int]:
    """(gRPC port, ops port) of a running worker, from the environment the pool gave it."""
    pairs = dict(entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry)
    return int(pairs["MODELWAY_GRPC_PORT"]), int(pairs["MODELWAY_OPS_PORT"])


def _host_stats(admin_socket: Path, grpc_port: int) -> dict[str, str]:
    """Envoy's view of one worker in the modelway cluster (/clusters lines `modelway::addr::name::value`)."""
    _, text = admin_call(admin_socket, "GET", "/clusters")
    prefix = f"modelway::127.0.0.1:{grpc_port}::"
    return {
        line[len(prefix) :].split("::", 1)[0]: line[len(prefix) :].split("::", 1)[1]
        for line in text.splitlines()
        if line.startswith(prefix)
    }


class _HealthWatch:
    """Samples Envoy's health flags of one worker every 10 ms, in a thread: (when, flags)."""

    def __init__(self, admin_socket: Path, grpc_port: int) -> None:
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._admin_socket, self._grpc_port = admin_socket, grpc_port
        self._thread = threading.Thread(target=self._run, args=(admin_socket, grpc_port), daemon=True)

    def _run(self, admin_socket: Path, grpc_port: int) -> None:
        while not self._stop.wait(0.01):
            self.seen.append((time.monotonic(), _host_stats(admin_socket, grpc_port)["health_flags"]))

    def __enter__(self) -> _HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        # The last word: what the caller waited for may have come after the thread's last sample.
        self.seen.append((time.monotonic(), _host_stats(self._admin_socket, self._grpc_port)["health_flags"]))


def _retry_stats(admin_socket: Path) -> list[str]:
    """Envoy's counters of retries, ejections and health checks in the modelway cluster."""
    words = ("retry", "outlier", "ejections", "health_check", "cx_connect_fail", "none_healthy")
    _, text = admin_call(admin_socket, "GET", "/stats")
    return [line for line in text.splitlines() if "cluster.modelway." in line and any(w in line for w in words)]


def _started_at(pid: int) -> float:
    """When a process started, in seconds since boot (CLOCK_BOOTTIME)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _access_log(workdir: Path) -> list[dict[str, str]]:
    path = EdgeFiles.in_repo(ROOT, workdir).access_log
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Up]:
    """`modelway up --workers 3` on a store that has its account and key already (made through the CLI),
    every worker answering; drained at the end, which must end cleanly."""
    workdir = tmp_path_factory.mktemp("failover")
    config_path = workdir / "modelway.toml"
    config_path.write_text(TEST_CONFIG)
    stack = _new_stack(workdir, config_path)
    stack.env.update(
        MODELWAY_GRPC_PORT=str(_free_run(WORKERS)),
        MODELWAY_OPS_PORT=str(_free_run(WORKERS)),
        MODELWAY_REDIS_URL=redis_server.url,
    )
    running = start_up(stack, "--workdir", str(workdir), "--workers", str(WORKERS))
    try:
        running.banner()
        # A fresh Redis is filled from the store first (calls are refused with 503 meanwhile): wait until
        # every worker answers (calls go round the workers).
        deadline = time.monotonic() + 60
        while {a.status for a in asyncio.run(_load(stack.http_port, stack.api_key, 0.0, calls=3 * WORKERS))} != {200}:
            assert time.monotonic() < deadline, "the workers did not all answer within 60 s"
            time.sleep(0.2)
        yield running
        running.signal(signal.SIGTERM)
        assert running.wait(timeout=60) == 0
    finally:
        if running.process.poll() is None:
            running.signal(signal.SIGKILL)
            running.wait(timeout=10)
        _kill_envoy_of(workdir)


@dataclass(frozen=True)
class Stopped:
    grpc_port: int
    at: float  # when the signal was sent, monotonic
    answers: list[Answer]
    seen: list[tuple[float, str]]  # Envoy's health flags of the worker, sampled: (when, flags)
    retries: int  # calls Envoy sent to another worker meanwhile

    def out_and_back(self) -> tuple[float, str, float]:
        """Seconds after the signal until Envoy took the worker out of its rotation (and its flags
        then), and until it put it back."""
        out, flags = next((at, flags) for at, flags in self.seen if at >= self.at and flags != "healthy")
        back = next(at for at, flags in self.seen if at > out and flags == "healthy")
        return out - self.at, flags, back - self.at


def _counter(admin_socket: Path, name: str) -> int:
    _, text = admin_call(admin_socket, "GET", f"/stats?filter=^{name}$")
    return int(text.split(":")[1]) if ":" in text else 0


def _stop_under_load(up: Up, sig: int) -> Stopped:
    """Sends `sig` to one worker KILL_AFTER seconds into LOAD_SECONDS of load."""
    victim = _children(up.process.pid)[0]
    grpc_port, _ = _worker_ports(victim)
    sent: list[float] = []

    async def signal_later() -> None:
        await asyncio.sleep(KILL_AFTER)
        os.kill(victim, sig)
        sent.append(time.monotonic())

    async def under_load() -> list[Answer]:
        return await _load(up.stack.http_port, up.stack.api_key, LOAD_SECONDS, asyncio.ensure_future(signal_later()))

    retries = _counter(_admin(up), "cluster.modelway.upstream_rq_retry")
    with _HealthWatch(_admin(up), grpc_port) as watch:
        answers = asyncio.run(under_load())
        retries = _counter(_admin(up), "cluster.modelway.upstream_rq_retry") - retries
        # Until the pool has started it again and Envoy sends it calls again.
        _wait_back(up, victim, grpc_port)
    return Stopped(grpc_port, sent[0], answers, watch.seen, retries)


def _wait_back(up: Up, victim: int, grpc_port: int) -> None:
    deadline = time.monotonic() + 60
    while len(_children(up.process.pid)) != WORKERS or victim in _children(up.process.pid):
        assert time.monotonic() < deadline, "the stopped worker was not started again"
        time.sleep(0.02)
    while _host_stats(_admin(up), grpc_port)["health_flags"] != "healthy":
        assert time.monotonic() < deadline, _host_stats(_admin(up), grpc_port)
        time.sleep(0.02)


def _admin(up: Up) -> Path:
    return EdgeFiles.in_repo(ROOT, up.stack.workdir).admin_socket


def test_a_worker_drained_under_load_fails_no_call(up: Up) -> None:
    """SIGTERM (a clean stop): its /readyz says 503 and it refuses new calls, which Envoy sends to
    the others; the calls it has finish."""
    stopped = _stop_under_load(up, signal.SIGTERM)
    statuses = Counter(answer.status for answer in stopped.answers)
    assert set(statuses) == {200}, [a for a in stopped.answers if a.status != 200]
    out, flags, back = stopped.out_and_back()
    print(
        f"\ndrain: {len(stopped.answers)} calls under load, all 200, {stopped.retries} sent again to another "
        f"worker; out of Envoy's rotation {out:.3f} s after SIGTERM ({flags}), back {back:.2f} s after it"
    )


def test_a_worker_killed_under_load_costs_only_its_calls_in_flight(up: Up) -> None:
    """SIGKILL: the calls it had are cut (503 in the OpenAI shape); no other call is refused by Envoy
    for want of a worker; the pool starts it again and it serves again."""
    started = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    before = set(_children(up.process.pid))
    stopped = _stop_under_load(up, signal.SIGKILL)
    killed, answers, grpc_port = stopped.at, stopped.answers, stopped.grpc_port
    statuses = Counter(answer.status for answer in answers)
    (successor,) = set(_children(up.process.pid)) - before
    restarted = _started_at(successor) - (started + killed)

    # Envoy's own account of every call: none was refused for want of a worker.
    lines = {
        line["request_id"]: line for line in _access_log(up.stack.workdir) if line["path"].endswith("/completions")
    }
    failed = [answer for answer in answers if answer.status != 200]
    never_sent = [
        lines[a.request_id]
        for a in failed
        if a.request_id in lines and any(word in lines[a.request_id]["details"] for word in NEVER_SENT)
    ]
    assert never_sent == [], (never_sent, _retry_stats(_admin(up)))
    # The calls that did fail were under way on the killed worker: cut when it died, and answered in
    # the OpenAI shape.
    for answer in failed:
        assert answer.status == 503, answer
        assert "connection_termination" in lines[answer.request_id]["details"], lines[answer.request_id]
        assert set(json.loads(answer.body)["error"]) >= {"message", "type", "code"}, answer
        assert killed - 0.1 <= answer.at <= killed + 2.0, (answer.at - killed, answer)
    assert len(failed) <= CLIENTS  # at most the one call each client had under way
    assert statuses[200] > 0
    ejected, flags, back = stopped.out_and_back()

    # The pool's new worker takes calls again. Meanwhile the shared state may be rebuilt (the killed
    # worker held credits): every worker then refuses calls for a moment, in the OpenAI shape.
    deadline = time.monotonic() + 60
    served_before = int(_host_stats(_admin(up), grpc_port)["rq_success"])
    after: list[Answer] = []
    while int(_host_stats(_admin(up), grpc_port)["rq_success"]) == served_before:
        assert time.monotonic() < deadline, "the restarted worker got no calls"
        after += asyncio.run(_load(up.stack.http_port, up.stack.api_key, 0.5))
    served = int(_host_stats(_admin(up), grpc_port)["rq_success"]) - served_before
    refused = [a for a in after if a.status != 200]
    for answer in refused:
        assert answer.status == 503 and b'"code":"shared_state_unavailable"' in answer.body, answer
    print(
        f"\nkill: {len(answers)} calls under load ({dict(statuses)}), {len(failed)} cut in flight, "
        f"0 refused by Envoy, {stopped.retries} sent again to another worker; worker restarted {restarted:.2f} s "
        f"after the kill, out of Envoy's rotation {ejected:.3f} s after it ({flags}), back {back:.2f} s after "
        f"it; then it served "
        f"{served} of {len(after)} calls ({len(refused)} refused while the shared state was rebuilt)"
    )


def test_calls_right_after_an_idle_worker_is_killed_go_to_the_others(up: Up) -> None:
    """No call of its own to cut, so nothing ejected it yet: the first call Envoy hands it finds the
    port closed (connect-failure) and is sent to another worker, before any health check notices.

    Envoy may still hold an idle connection to it from the earlier tests. A call written to that
    connection in the instant before Envoy reads its close could be cut (the worker may have read
    it, so it is not retried): the calls start once Envoy has seen the close (or after 1 s)."""
    victim = _children(up.process.pid)[0]
    grpc_port, _ = _worker_ports(victim)
    admin = _admin(up)
    retries = _counter(admin, "cluster.modelway.upstream_rq_retry")
    closed = _counter(admin, "cluster.modelway.upstream_cx_destroy_remote")
    os.kill(victim, signal.SIGKILL)
    noticed = time.monotonic() + 1.0
    while _counter(admin, "cluster.modelway.upstream_cx_destroy_remote") == closed and time.monotonic() < noticed:
        time.sleep(0.01)
    answers = asyncio.run(_load(up.stack.http_port, up.stack.api_key, 0.0, calls=2 * WORKERS))
    retries = _counter(admin, "cluster.modelway.upstream_rq_retry") - retries
    lines = {line["request_id"]: line for line in _access_log(up.stack.workdir)}
    # A 503 here can only be the shared state's, rebuilt after an earlier kill: a worker's answer.
    for answer in answers:
        assert answer.status == 200 or b'"code":"shared_state_unavailable"' in answer.body, lines[answer.request_id]
    _wait_back(up, victim, grpc_port)
    print(f"\nidle kill: {len(answers)} calls right after, {Counter(a.status for a in answers)}, {retries} sent again")
