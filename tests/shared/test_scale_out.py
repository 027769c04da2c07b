"""3 server processes (`modelway serve --workers 3`) behind 2 Envoys, on one store and one real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import grpc
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from modelway.config import load_config
from modelway.edge import EdgeFiles, Envoy
from modelway.v1 import chat_pb2, chat_pb2_grpc, keys_pb2, keys_pb2_grpc
from tests.conftest import ROOT, TEST_CONFIG, Stack, _wait_for, free_port
from tests.real.postgres import connect_db
from tests.real.redis import RedisServer

WORKERS = 3
# Keys and plans here change only through the API (pub/sub must carry them): the periodic refresh is slow.
# Redis calls give up after 1 s, not the default 0.5: 3 workers, 2 Envoys, Redis and the clients share 2
# cores here, and a worker stalled half a second by them must not look like a slow Redis.
CONFIG = TEST_CONFIG.replace("refresh_seconds = 0.2", "refresh_seconds = 30") + "\n[shared]\ntimeout_seconds = 1.0\n"


# Runs are picked below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default):
# a port there may be taken by an outgoing connection between the probe and the worker's bind.
_RUN_PORTS = range(20000, 32768)


def _free_run(count: int) -> int:
    """The first of `count` consecutive free ports (worker i listens on base + i)."""
    for _ in range(200):
        base = random.randrange(_RUN_PORTS.start, _RUN_PORTS.stop - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)  # closed below, also when its bind fails
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


@dataclass
class Scaled:
    stack: Stack  # CLI helpers; its server is the worker pool
    redis: RedisServer
    pool: subprocess.Popen[bytes]
    envoys: list[Envoy]
    http_ports: list[int]
    grpc_base: int
    ops_base: int

    def worker_target(self, index: int) -> str:
        return f"127.0.0.1:{self.grpc_base + index}"

    def served(self, status: str = "200") -> list[float]:
        """Calls each worker has ended with `status` so far, from its own /metrics (ops port base + i)."""
        counts = []
        for index in range(WORKERS):
            url = f"http://127.0.0.1:{self.ops_base + index}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            counts.append(
                sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "modelway_requests_total" and sample.labels.get("status") == status
                )
            )
        return counts

    def rows(self, query: str, *args: object) -> list[tuple[object, ...]]:
        with connect_db(self.stack.db_path) as db:
            return list(db.execute(query, args).fetchall())

    def balance(self, account: str) -> int:
        return int(self.rows("SELECT credits FROM accounts WHERE id = ?", account)[0][0])


def _store_env(url: str, workdir: Path) -> dict[str, str]:
    if url.startswith("postgresql://"):
        return {"MODELWAY_STORE_URL": url, "MODELWAY_DATA_DIR": str(workdir)}
    return {"MODELWAY_DB": url}


@contextlib.contextmanager
def serving_workers(
    workdir: Path, config_text: str, redis_server: RedisServer, store_url: str
) -> Iterator[tuple[Stack, subprocess.Popen[bytes]]]:
    """`modelway serve --workers WORKERS` on `store_url` and Redis, an account and a key made first,
    every worker serving; stopped (SIGTERM) after, which must end it with status 0."""
    config_path = workdir / "modelway.toml"
    config_path.write_text(config_text)
    grpc_base, ops_base = _free_run(WORKERS), _free_run(WORKERS)
    env = {
        **os.environ,
        "MODELWAY_GRPC_PORT": str(grpc_base),
        "MODELWAY_OPS_PORT": str(ops_base),
        "MODELWAY_HTTP_PORT": str(free_port()),
        **_store_env(store_url, workdir),
        "MODELWAY_REDIS_URL": redis_server.url,
    }
    stack = Stack(workdir, config_path, env, int(env["MODELWAY_HTTP_PORT"]), grpc_base, api_key="")
    stack.account_id = stack.create_account("tests")
    stack.api_key = stack.create_key("tests")[1]
    with open(workdir / "server.log", "ab") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "modelway", "--config", str(config_path), "serve", "--workers", str(WORKERS)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for index in range(WORKERS):
            _wait_for(lambda i=index: _serving(f"127.0.0.1:{grpc_base + i}"), f"worker {index}", stack, timeout=60)
        yield stack, pool
    finally:
        pool.send_signal(signal.SIGTERM)
        code = pool.wait(timeout=60)
        assert code == 0, (workdir / "server.log").read_text()[-3000:]


@contextlib.contextmanager
def run_scaled(workdir: Path, redis_server: RedisServer, store_url: str, config_text: str = CONFIG) -> Iterator[Scaled]:
    """`modelway serve --workers 3` on `store_url` and Redis, behind 2 Envoys; stopped (SIGTERM) after."""
    with serving_workers(workdir, config_text, redis_server, store_url) as (stack, pool):
        envoys: list[Envoy] = []
        http_ports = [stack.http_port, free_port()]
        try:
            config = load_config(stack.config_path, stack.env)
            for index, http_port in enumerate(http_ports):
                server = replace(config.server, http_port=http_port, workers=WORKERS)
                files = EdgeFiles.in_repo(ROOT, workdir / f"envoy{index}")
                envoy = Envoy.start(server, files, drain_seconds=1, base_id=http_port)
                envoys.append(envoy)
                _wait_for(envoy.ready, f"Envoy {index}", stack)
            yield Scaled(stack, redis_server, pool, envoys, http_ports, config.server.grpc_port, config.server.ops_port)
        finally:
            for envoy in envoys:
                envoy.stop()


@pytest.fixture(scope="module")
def scaled(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, shared_store_url: str
) -> Iterator[Scaled]:
    with run_scaled(tmp_path_factory.mktemp("scaled"), redis_server, shared_store_url) as running:
        yield running


def _serving(target: str) -> bool:
    from tests.conftest import _grpc_serving

    return _grpc_serving(target)


async def _chat(
    session: aiohttp.ClientSession, port: int, key: str, **extra: object
) -> tuple[int, dict[str, str], dict[str, object]]:
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8, **extra}
    async with session.post(
        f"http://127.0.0.1:{port}/api/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, await response.json(content_type=None)


async def _burst(scaled: Scaled, key: str, calls: int) -> list[tuple[int, dict[str, str], dict[str, object]]]:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        ports = scaled.http_ports
        return await asyncio.gather(*(_chat(session, ports[i % len(ports)], key) for i in range(calls)))


def _away_from_a_minute_end() -> None:
    """A burst must fall inside one rate-limit window: not in a minute's last 15 seconds."""
    second = time.time() % 60
    if second > 45:
        time.sleep(61 - second)


def test_300_calls_through_two_envoys_admit_exactly_the_keys_50_per_minute(scaled: Scaled) -> None:
    key_id, key = scaled.stack.create_key("fifty", "", "--rate-limit", "50")
    _away_from_a_minute_end()
    before = scaled.served("200"), scaled.served("429")
    results = asyncio.run(_burst(scaled, key, 300))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 50, sorted(set(statuses))
    assert statuses.count(429) == 250
    refused = next(headers for status, headers, _ in results if status == 429)
    assert refused["x-ratelimit-limit-requests"] == "50" and int(refused["retry-after"]) >= 1
    served = scaled.rows("SELECT count(*) FROM usage WHERE key_id = ? AND status = 200", key_id)
    assert served == [(50,)]
    # Every worker refused some of the 250 (its own /metrics says so) while all of them answered 50
    # in all: with a limit per process, a worker refuses only after answering 50 itself. How the 50
    # fall is the race's (seen: [40, 1, 9], [0, 48, 2]): a worker may answer none.
    answered = [after - earlier for after, earlier in zip(scaled.served("200"), before[0], strict=True)]
    limited = [after - earlier for after, earlier in zip(scaled.served("429"), before[1], strict=True)]
    print(f"per worker: answered {answered}, refused {limited}")
    assert sum(answered) == 50 and sum(limited) == 250
    assert all(count > 0 for count in limited), (answered, limited)


def _cost_of_a_call(scaled: Scaled) -> int:
    """What one test call costs, in micro-credits (measured with a call of a throwaway account)."""
    probe_account = scaled.stack.create_account("probe", credits=1000)
    _, probe_key = scaled.stack.create_key("probe", probe_account)
    status, _, _ = asyncio.run(_burst(scaled, probe_key, 1))[0]
    assert status == 200
    ((cost,),) = scaled.rows("SELECT cost FROM usage WHERE account_id = ?", probe_account)
    assert int(cost) > 0  # type: ignore[call-overload]
    return int(cost)  # type: ignore[call-overload]


def _unexpected(results: list[tuple[int, dict[str, str], dict[str, object]]], allowed: set[int]) -> str:
    """Every response outside `allowed`, shown whole (status, request id, body) for the failure message."""
    return "; ".join(
        f"{status} {headers.get('x-request-id', '-')} {body}"
        for status, headers, body in results
        if status not in allowed
    )


def test_500_calls_racing_for_100_calls_worth_of_credits_never_overspend(scaled: Scaled) -> None:
    stack = scaled.stack
    cost = _cost_of_a_call(scaled)
    account = stack.create_account("racer", credits=100 * cost / 1e6)
    start = scaled.balance(account)
    key_id, key = stack.create_key("racer", account)
    before = scaled.served("200")
    results = asyncio.run(_burst(scaled, key, 500))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429}, _unexpected(results, {200, 429})  # OpenAI's insufficient_quota is a 429
    end = scaled.balance(account)
    rows = scaled.rows("SELECT request_id, cost, status FROM usage WHERE key_id = ?", key_id)
    assert end >= 0
    assert sum(int(row[1]) for row in rows) == start - end  # type: ignore[call-overload]
    assert len(rows) == 500 and len({row[0] for row in rows}) == 500  # one row per call
    assert sum(1 for row in rows if row[2] == 200) == statuses.count(200) > 0
    assert statuses.count(200) <= 100
    # Each of the three workers answered some of them (from its own /metrics).
    answered = [after - earlier for after, earlier in zip(scaled.served("200"), before, strict=True)]
    print(f"per worker: answered {answered} of {statuses.count(200)}")
    assert sum(answered) == statuses.count(200) and all(count > 0 for count in answered), answered


def test_a_key_deleted_through_process_1_fails_on_process_3_within_a_second(scaled: Scaled) -> None:
    key_id, secret = scaled.stack.create_key("doomed")
    admin = (("authorization", f"Bearer {scaled.stack.api_key}"),)
    caller = (("authorization", f"Bearer {secret}"),)
    request = chat_pb2.CreateChatCompletionRequest(
        model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text="hi")]
    )
    with grpc.insecure_channel(scaled.worker_target(2)) as third:
        chat = chat_pb2_grpc.ChatServiceStub(third)
        chat.CreateChatCompletion(request, metadata=caller, timeout=10)  # known on process 3
        with grpc.insecure_channel(scaled.worker_target(0)) as first:
            keys_pb2_grpc.KeysServiceStub(first).DeleteApiKey(
                keys_pb2.DeleteApiKeyRequest(id=key_id), metadata=admin, timeout=10
            )
        deleted = time.monotonic()
        while True:
            try:
                chat.CreateChatCompletion(request, metadata=caller, timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() - deleted < 1.0, "the deleted key still works on process 3"
            time.sleep(0.02)
    assert time.monotonic() - deleted < 1.0


def test_a_redis_restart_mid_load_admits_no_call_unmetered(scaled: Scaled) -> None:
    stack = scaled.stack
    cost = _cost_of_a_call(scaled)
    worth = 150  # calls' worth of credits: the load below may spend them all, never more
    account = stack.create_account("restart", credits=worth * cost / 1e6)
    start = scaled.balance(account)
    key_id, key = stack.create_key("restart", account)

    async def load() -> list[tuple[int, dict[str, str], dict[str, object]]]:
        results: list[tuple[int, dict[str, str], dict[str, object]]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def client(index: int) -> None:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    results.append(await _chat(session, scaled.http_ports[index % 2], key))

            restart = asyncio.get_running_loop().run_in_executor(None, _restart_later, scaled.redis)
            await asyncio.gather(*(client(i) for i in range(8)), restart)
        return results

    results = asyncio.run(load())
    statuses = [status for status, _, _ in results]
    assert statuses.count(503) > 0, "the restart refused no call"
    assert set(statuses) <= {200, 429, 503}, _unexpected(results, {200, 429, 503})
    for status, headers, body in results:
        if status == 503:
            assert headers["retry-after"] == "2"
            assert body["error"]["code"] == "shared_state_unavailable"  # type: ignore[index]
        if status == 429:
            assert body["error"]["code"] == "insufficient_quota", body  # type: ignore[index]
    assert statuses.count(200) <= worth
    # Recovery is shown below: the calls after the load are answered (after Retry-After if the
    # rebuild is still under way on a loaded machine) until the credits run out.
    # Every admitted call has its row and its charge; the balance is the store's less exactly those.
    answered = [headers["x-request-id"] for status, headers, _ in results if status == 200]
    rows = dict(scaled.rows("SELECT request_id, cost FROM usage WHERE key_id = ? AND status = 200", key_id))
    assert set(answered) <= set(rows) and all(int(rows[r]) > 0 for r in answered)  # type: ignore[call-overload]
    charged = scaled.rows("SELECT coalesce(sum(cost), 0) FROM usage WHERE key_id = ?", key_id)[0][0]
    assert start - scaled.balance(account) == charged
    # And Redis, rebuilt, agrees with the store: one call after another, the account spends what the
    # store says it has, down to where the next call's worst case no longer fits, and no further.
    for _ in range(worth + 1):
        before = scaled.balance(account)
        ((status, _, body),) = asyncio.run(_burst(scaled, key, 1))
        # A charge write that straddled the rebuild forces one more (see shared/link.py): the caller
        # is told to come back, and does, as a client honouring Retry-After would.
        for _ in range(10):
            if status != 503:
                break
            time.sleep(2)
            ((status, _, body),) = asyncio.run(_burst(scaled, key, 1))
        if status != 200:
            break
    assert status == 429 and body["error"]["code"] == "insufficient_quota", body  # type: ignore[index]
    assert scaled.balance(account) == before  # the refused call cost nothing
    assert f"the account has {before / 1e6:g}." in body["error"]["message"], body  # type: ignore[index]


def _restart_later(redis: RedisServer) -> None:
    time.sleep(2)
    redis.restart(down_seconds=0.5)


def test_a_redis_pause_longer_than_the_timeout_refuses_only_the_calls_in_flight(scaled: Scaled) -> None:
    stack = scaled.stack
    account = stack.create_account("pause", credits=1000)
    key_id, key = stack.create_key("pause", account)
    client = redis.Redis.from_url(scaled.redis.url, decode_responses=True)
    log = stack.workdir / "server.log"
    rebuilds = log.read_text().count("shared state rebuilt")
    pause = 2.5  # the workers' Redis calls give up after 1 s (shared.timeout_seconds in CONFIG)

    async def load() -> list[tuple[float, float, int, dict[str, str], dict[str, object]]]:
        calls: list[tuple[float, float, int, dict[str, str], dict[str, object]]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def caller(index: int) -> None:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    status, headers, body = await _chat(session, scaled.http_ports[index % 2], key)
                    calls.append((sent, time.monotonic(), status, headers, body))

            await asyncio.gather(*(caller(i) for i in range(8)))
        return calls

    epoch = client.get("mw:epoch")
    load_started = time.monotonic()

    def pause_later() -> tuple[float, float]:
        """When the pause was asked for, and when Redis said it began (it began in between)."""
        time.sleep(2)
        asked = time.monotonic()
        client.client_pause(int(pause * 1000), all=True)
        return asked, time.monotonic()

    Calls = list[tuple[float, float, int, dict[str, str], dict[str, object]]]

    async def run() -> tuple[Calls, tuple[float, float], list[tuple[int, dict[str, str], dict[str, object]]]]:
        loaded = asyncio.ensure_future(load())
        window = await asyncio.get_running_loop().run_in_executor(None, pause_later)
        # Sent while Redis is paused (it stays so for 2.5 s, longer than their 1 s wait on it).
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            during = await asyncio.gather(*(_chat(session, scaled.http_ports[i % 2], key) for i in range(4)))
        return await loaded, window, during

    calls, (paused_at, confirmed_at), during = asyncio.run(run())
    assert [status for status, _, _ in during] == [503] * 4, during
    resumed_at = confirmed_at + pause  # at the latest
    statuses = [status for _, _, status, _, _ in calls]
    refused = [(sent, done) for sent, done, status, _, _ in calls if status == 503]
    late = [status for sent, _, status, _, _ in calls if sent >= resumed_at + 0.6]
    print(
        f"calls {len(calls)} in {time.monotonic() - load_started:.1f}s: answered {statuses.count(200)}, refused "
        f"{len(refused)} (sent {min((s for s, _ in refused), default=0) - paused_at:+.2f}s to "
        f"{max((s for s, _ in refused), default=0) - paused_at:+.2f}s from the pause); sent 0.6s or more after "
        f"it: {len(late)}, answered {late.count(200)}; {len(during)} more sent during the pause, all refused"
    )
    assert set(statuses) <= {200, 503}, _unexpected([(s, h, b) for _, _, s, h, b in calls], {200, 503})
    # Only calls in flight during the pause were refused (sent before it ended, answered after it began)...
    assert all(sent < resumed_at and done > paused_at for sent, done in refused), refused
    for status, headers, body in [(status, headers, body) for _, _, status, headers, body in calls] + during:
        if status == 503:
            assert headers["retry-after"] == "2"
            assert body["error"]["code"] == "shared_state_unavailable"  # type: ignore[index]
    # ...and once Redis answered again, every call was: in the same epoch, with no rebuild.
    assert late and set(late) == {200}, late
    assert client.get("mw:epoch") == epoch
    assert log.read_text().count("shared state rebuilt") == rebuilds
    # Nothing leaked: once the rows are written, Redis holds nothing for the account or its key, and its
    # balance is the store's, which is the start less exactly the rows' costs.
    deadline = time.monotonic() + 20
    while True:
        held = client.hgetall(f"mw:{epoch}:a:{account}")
        if int(held.get("held", 0)) == 0 and int(held["bal"]) == scaled.balance(account):
            break
        assert time.monotonic() < deadline, (held, scaled.balance(account))
        time.sleep(0.2)
    assert int(client.hget(f"mw:{epoch}:k:{key_id}", "held") or 0) == 0  # type: ignore[arg-type]
    charged = scaled.rows("SELECT coalesce(sum(cost), 0) FROM usage WHERE key_id = ?", key_id)[0][0]
    assert 1_000_000_000 - scaled.balance(account) == charged
    client.close()
