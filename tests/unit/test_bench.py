"""The `make bench` harness's pieces: the mock Envoy, the wrk script's error count, parsing, /proc figures, targets."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from bench.__main__ import SCENARIOS, Settings, _measure
from bench.floor import split_events
from bench.load import LoadResult, Target, parse_wrk, percentile, run_wrk
from bench.mock import CHUNKS, PATHS, MockUpstream
from bench.procs import ProcessTree, cpu_seconds, descendants
from bench.report import FLOOR, LITELLM, MOCK, MODELWAY, NATIVE, REST, Report, Row, checks, render
from bench.systems import System


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    upstream = MockUpstream.start(_free_port(), tmp_path_factory.mktemp("mock"))
    try:
        yield upstream
    finally:
        upstream.stop()


def _post(url: str) -> tuple[int, str, bytes, float]:
    started = time.monotonic()
    request = urllib.request.Request(url + "/chat/completions", data=b'{"model":"m"}', method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read(), time.monotonic() - started


def test_mock_answers_a_chat_completion_with_usage(mock: MockUpstream) -> None:
    status, content_type, body, _ = _post(mock.url("json"))
    assert (status, content_type) == (200, "application/json")
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}


def test_mock_streams_twenty_chunks_with_usage_then_done(mock: MockUpstream) -> None:
    status, content_type, body, _ = _post(mock.url("sse"))
    assert (status, content_type) == (200, "text/event-stream")
    events = body.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert len(chunks) == CHUNKS
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["usage"]["completion_tokens"] == CHUNKS
    assert all("usage" not in chunk for chunk in chunks[:-1])


def test_mock_keeps_the_connection_alive_across_calls(mock: MockUpstream) -> None:
    # A mock that closed each connection would charge every system a TCP connect per upstream call.
    connection = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        for mode in ("json", "sse", "json"):
            connection.request("POST", PATHS[mode] + "/chat/completions", body=b'{"model":"m"}')
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            assert response.getheader("Connection") != "close"
            sock = connection.sock
            assert sock is not None  # http.client drops the socket when the server said close
    finally:
        connection.close()


def test_mock_slow_path_waits_fifty_ms(mock: MockUpstream) -> None:
    _, _, _, fast = _post(mock.url("json"))
    status, _, body, slow = _post(mock.url("slow"))
    assert status == 200 and b'"usage"' in body
    assert slow >= 0.05 > fast


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
def test_wrk_script_counts_incomplete_answers_as_errors(mock: MockUpstream) -> None:
    base = f"http://127.0.0.1:{mock.port}"
    target = Target(base, "/{mode}/v1/chat/completions", "", {"json": "m", "sse": "m", "slow": "m"})
    good = run_wrk(target, "sse", 2, 1)
    assert good.requests > 10 and good.errors == 0
    # The JSON path never ends in [DONE]: posted as a stream, every answer is an error.
    wrong = run_wrk(Target(base, "/json/v1/chat/completions", "", target.models), "sse", 2, 1)
    assert wrong.requests > 10 and wrong.errors == wrong.requests
    # A 404 is an error, whatever its body says.
    missing = run_wrk(Target(base, "/nowhere", "", target.models), "json", 1, 1)
    assert missing.requests > 0 and missing.errors == missing.requests


def test_parse_wrk_adds_socket_errors_and_timeouts_to_bad_answers() -> None:
    stdout = (
        "Running 15s test @ http://127.0.0.1:1\n"
        'BENCH_RESULT {"requests":1000,"duration_us":2000000,"good":990,"bad":4,"connect":1,"read":2,'
        '"write":0,"status":4,"timeout":3,"p50_us":1500,"p90_us":2000,"p99_us":4250,"max_us":9000}\n'
    )
    result = parse_wrk(stdout)
    assert result == LoadResult(requests=1000, errors=10, seconds=2.0, p50_ms=1.5, p99_ms=4.25)
    assert result.rps == 500
    with pytest.raises(RuntimeError, match="no result line"):
        parse_wrk("wrk: connection refused\n")


def test_split_events_keeps_an_unfinished_event_for_the_next_read() -> None:
    events, rest = split_events(b"data: 1\n\ndata: 2\n\ndata: [DO")
    assert events == [b"data: 1\n\n", b"data: 2\n\n"]
    events, rest = split_events(rest + b"NE]\n\n")
    assert (events, rest) == ([b"data: [DONE]\n\n"], b"")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([], 0.5)) == (50.0, 99.0, 0.0)


def test_process_tree_counts_a_busy_child_cpu_and_memory_and_tells_envoy_apart(mock: MockUpstream) -> None:
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        assert {child.pid, mock.process.pid} <= set(descendants(os.getpid()))
        deadline = time.monotonic() + 10
        while cpu_seconds(child.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(child.pid) >= 0.29
        everything = ProcessTree((os.getpid(),)).cpu()
        assert everything.server >= cpu_seconds(os.getpid()) + 0.29
        # Other tests' Envoys may run under this process too: the mock's CPU is at least counted as Envoy's.
        assert everything.envoy >= cpu_seconds(mock.process.pid) > 0
        both = ProcessTree((child.pid, mock.process.pid)).cpu()
        assert both.envoy == cpu_seconds(mock.process.pid) and both.server == cpu_seconds(child.pid)
        python = ProcessTree((child.pid,))
        assert python.cpu().envoy == 0 and python.rss()[1] == 0
        assert python.rss()[0] > 4 * 1024 * 1024
        envoy = ProcessTree((mock.process.pid,))
        assert envoy.cpu().server == 0 and envoy.rss()[0] == 0 and envoy.rss()[1] > 4 * 1024 * 1024
    finally:
        child.kill()
        child.wait()


class _NoProcesses(ProcessTree):
    """A system with no processes of its own: nothing to wait for between runs (the waits are noted)."""

    settled: ClassVar[list[tuple[int, ...]]] = []

    def settle(self, idle_share: float = 0.05, step: float = 0.25, timeout: float = 60.0) -> None:
        self.settled.append(self.roots)


def test_systems_measured_together_take_turns_in_each_scenario_and_report_their_rows_apart() -> None:
    """A drifting machine then slows both sides of a ratio alike."""
    runs: list[tuple[str, str, int, float]] = []

    def contender(name: str, via: str, latency: float) -> tuple[System, str, Callable[[str, int, float], LoadResult]]:
        def load(mode: str, concurrency: int, seconds: float) -> LoadResult:
            runs.append((f"{name} {via}", mode, concurrency, seconds))
            return LoadResult(requests=100, errors=0, seconds=seconds, p50_ms=latency, p99_ms=latency)

        tree = _NoProcesses((1,) if name == FLOOR else (2,))  # modelway's two interfaces: one process tree
        system = System(name, tree, Target("http://127.0.0.1:1", "", "", {}), 0, lambda: None)
        return system, via, load

    settings = Settings(seconds=2, repeats=2, warmup_seconds=1, systems=(), workers=1, litellm_venv=Path(), out=Path())
    contenders = [contender(FLOOR, REST, 1.0), contender(MODELWAY, REST, 2.0), contender(MODELWAY, NATIVE, 3.0)]
    _NoProcesses.settled.clear()
    rows = _measure(contenders, settings)
    names = (f"{FLOOR} {REST}", f"{MODELWAY} {REST}", f"{MODELWAY} {NATIVE}")
    expected = []
    for mode, concurrency in SCENARIOS:
        expected += [(name, mode, concurrency, 1.0) for name in names]  # every warm-up first
        expected += [(name, mode, concurrency, 2.0) for _ in range(2) for name in names]  # then turns
    assert runs == expected
    # Before every measured run, both systems are left to finish what earlier loads left behind.
    assert _NoProcesses.settled == [(1,), (2,)] * (len(SCENARIOS) * 2 * len(names))
    assert [(row.system, row.via, row.mode, row.concurrency, row.load.p50_ms) for row in rows] == [
        (name, via, mode, concurrency, latency)
        for name, via, latency in ((FLOOR, REST, 1.0), (MODELWAY, REST, 2.0), (MODELWAY, NATIVE, 3.0))
        for mode, concurrency in SCENARIOS
    ]


def _row(system: str, server_cpu: float, p50: float, mode: str = "json", concurrency: int = 1, errors: int = 0) -> Row:
    load = LoadResult(requests=1000, errors=errors, seconds=10, p50_ms=p50, p99_ms=p50 * 2)
    return Row(system, REST, mode, concurrency, load, server_cpu, 0.3, 60, 40)


def test_targets_compare_modelway_with_the_floor_litellm_and_the_mock() -> None:
    rows = (
        _row(MOCK, 0, 0.2),
        _row(FLOOR, 1.0, 1.0),
        _row(MODELWAY, 1.2, 1.5),
        _row(LITELLM, 30.0, 20.0),
        _row(MOCK, 0, 2.0, concurrency=64),
        _row(MODELWAY, 1.1, 5.0, concurrency=64, errors=3),
    )
    report = Report({}, "make bench", {}, rows, {MODELWAY: 1.2}, {"modelway --workers 2": "needs scale-out"})
    results = {check.target: (check.measured, check.passed) for check in checks(report)}
    assert results["modelway server CPU/request <= 1.3x the floor's (REST, json and sse)"] == ("1.20x", True)
    assert results["LiteLLM CPU/request >= 15x modelway's (server + Envoy)"] == ("20.20x", True)
    assert results["added p50 at c1, non-stream, through Envoy < 1.5 ms"] == ("1.30 ms", True)
    assert results["no errors at c64 (modelway, REST and gRPC)"] == ("3", False)
    assert results["50 ms upstream at c64: added p99 < 10 ms"] == ("n/a", None)
    assert results["start to ready < 2 s"] == ("1.20 s", True)
    assert results["stretch: beat the floor (server CPU/request < 1.0x)"] == ("1.20x", False)
    text = render(Report({"nproc": "2"}, "make bench", {"seconds": 15, "repeats": 3, "warmup_seconds": 3}, rows, {}))
    assert "modelway / floor, server CPU per request: json c1 1.20x" in text
    assert "[FAIL] no errors at c64" in text


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_the_in_process_driver_measures_both_servicers_and_counts_no_complete_answer_as_an_error(
    mode: str, tmp_path: Path
) -> None:
    # Its own process: it freezes the heap and sets up logging as a serving process does.
    args = ["--mode", mode, "--concurrency", "2", "--calls", "10", "--rounds", "2", "--workdir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.inproc", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(", ")[2].split(":")[0] for line in lines] == ["floor", "modelway"], lines
    for line in lines:
        assert line.startswith(f"{mode} c2, 2 rounds of 10 calls, ") and line.endswith("errors 0"), line
    # The calls really ran: modelway answered and recorded each one, its warm-up's included.
    with contextlib.closing(sqlite3.connect(tmp_path / "modelway" / "modelway.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM usage WHERE status = 200").fetchone() == (2 + 2 * 10,)
        assert db.execute("SELECT COUNT(*) FROM usage WHERE status != 200").fetchone() == (0,)


def test_the_in_process_driver_refuses_fewer_calls_than_callers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.inproc", "--concurrency", "16", "--calls", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--calls at least --concurrency" in done.stderr, done.stderr
