"""A clean shutdown (SIGTERM) drains in-flight calls and writes every usage row and charge; a restart keeps state."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG, Stack, running_stack, running_up
from tests.e2e.http import read_slow_stream, request
from tests.real.postgres import connect_db

CHAT = "/api/v1/chat/completions"


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose recorder has no flush timer to speak of: rows are written because calls wait for them."""
    config = TEST_CONFIG.replace("usage_flush_seconds = 0.05", "usage_flush_seconds = 60")
    with running_stack(tmp_path_factory.mktemp("durable"), config) as stack:
        yield stack


def query(stack: Stack, sql: str, *args: object) -> list[tuple[object, ...]]:
    with connect_db(stack.db_path) as db:
        return db.execute(sql, args).fetchall()


def call(stack: Stack, key: str, body: dict[str, object]) -> int:
    return request(stack.http_port, "POST", CHAT, body, {"Authorization": f"Bearer {key}"}).status


def slow_stream(stack: Stack, key: str, into: list[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    body = {"model": "echo-slow", "stream": True, "messages": [{"role": "user", "content": " ".join(["w"] * 40)}]}
    connection.request("POST", CHAT, json.dumps(body), {"Authorization": f"Bearer {key}"})
    into.append(connection.getresponse().read())
    connection.close()


def test_sigterm_writes_every_row_and_charge_then_restart_keeps_state(durable: Stack) -> None:
    account = durable.create_account("durable", credits=100)
    key_id, key = durable.create_key("durable", account, "--daily-token-budget", "60")
    hello = {"model": "echo-1", "messages": [{"role": "user", "content": "hello"}]}
    before = query(durable, "SELECT credits FROM accounts WHERE id = ?", account)[0][0]

    statuses = [call(durable, key + "x", hello), call(durable, key, {**hello, "model": "missing"})]
    assert statuses == [401, 404]
    while statuses[-1] != 429:  # spend the day's token budget
        statuses.append(call(durable, key, hello))
        assert len(statuses) < 20
    assert statuses[2:-1] == [200] * (len(statuses) - 3)
    # Group commit: every answered call's row is committed before its answer went out.
    assert query(durable, "SELECT COUNT(*) FROM usage") == [(len(statuses),)]

    received: list[bytes] = []
    streamer = threading.Thread(target=slow_stream, args=(durable, durable.api_key, received))
    streamer.start()
    time.sleep(0.3)  # the stream is under way (40 tokens at 20 ms each)
    assert durable.stop_server() == 0
    streamer.join(timeout=10)

    # The stream in flight at SIGTERM was allowed to finish, and was recorded.
    assert received and received[0].endswith(b"data: [DONE]\n\n")
    assert query(durable, "SELECT status FROM usage WHERE model = 'echo-slow'") == [(200,)]
    rows = query(durable, "SELECT status, cost FROM usage WHERE account_id = ? ORDER BY id", account)
    assert [status for status, _ in rows] == statuses[1:]
    assert query(durable, "SELECT status FROM usage WHERE account_id = ''") == [(401,)]
    after = query(durable, "SELECT credits FROM accounts WHERE id = ?", account)[0][0]
    charged = sum(int(cost) for _, cost in rows)  # type: ignore[call-overload]
    assert charged > 0 and before - after == charged  # type: ignore[operator]
    assert query(durable, "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = ?", key_id) == [(1,)]

    # A restart reads the day's spending back: the budget is still spent.
    durable.start_server()
    assert call(durable, key, hello) == 429
    assert call(durable, durable.api_key, hello) == 200


def test_sigterm_through_envoy_ends_a_stream_past_the_grace_period_with_an_error_frame_and_done(
    tmp_path: Path,
) -> None:
    config = TEST_CONFIG.replace("shutdown_grace_seconds = 5", "shutdown_grace_seconds = 1")
    with running_up(tmp_path, config) as up:
        key = up.banner().split("keep it):")[1].split()[0]
        short: list[bytes] = []
        long: list[bytes] = []
        started = [threading.Event(), threading.Event()]
        streams = [
            threading.Thread(target=read_slow_stream, args=(up.stack.http_port, key, 20, short, started[0])),  # ~0.4 s
            threading.Thread(target=read_slow_stream, args=(up.stack.http_port, key, 400, long, started[1])),  # ~8 s
        ]
        for thread in streams:
            thread.start()
        assert all(event.wait(10) for event in started)
        began = time.monotonic()
        up.signal(signal.SIGTERM)
        for thread in streams:
            thread.join(timeout=30)
        assert up.wait() == 0 and time.monotonic() - began < 5

        assert short[0].endswith(b"data: [DONE]\n\n") and b'"error"' not in short[0]
        frames = [frame for frame in long[0].split(b"\n\n") if frame]
        assert frames[-1] == b"data: [DONE]"
        error = json.loads(frames[-2][6:])["error"]
        assert "shutting down" in error["message"]
        with connect_db(up.stack.db_path) as db:
            rows = db.execute("SELECT status, error_code FROM usage WHERE model = 'echo-slow' ORDER BY id").fetchall()
        assert sorted(rows) == [(200, ""), (503, "server_shutdown")]
