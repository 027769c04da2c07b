"""`modelway up --workers N`: N processes behind one Envoy, ready together, a crash reported, drained together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelway.config import SharedConfig
from tests.conftest import ROOT, TEST_CONFIG, _kill_envoy_of, _new_stack, start_up
from tests.e2e.http import request
from tests.real.redis import RedisServer
from tests.shared.test_scale_out import _free_run


def test_more_than_one_worker_without_redis_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG)
    env = {key: value for key, value in os.environ.items() if key != "MODELWAY_REDIS_URL"}
    env["MODELWAY_DB"] = str(tmp_path / "db.sqlite")
    for command in ("serve", "up"):
        done = subprocess.run(
            [sys.executable, "-m", "modelway", "--config", str(config), command, "--workers", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr == (
            "modelway: --workers 3 needs [shared] redis_url (or MODELWAY_REDIS_URL): with per-process state "
            "each worker would admit the full rate limit and spend credits the others reserved\n"
        )


def test_the_redis_password_is_never_shown() -> None:
    shared = SharedConfig(redis_url="redis://app:s3cret-pw@10.0.0.5:6379/0")
    assert "s3cret-pw" not in repr(shared) and shared.shown_url == "redis://app:***@10.0.0.5:6379/0"
    assert SharedConfig(redis_url="redis://:pw@h:1/0").shown_url == "redis://***@h:1/0"


def test_envoy_config_lists_every_worker(tmp_path: Path) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG)
    command = ["envoy-config", "--root", str(ROOT), "--workers", "3", "--http-port", "18080"]
    done = subprocess.run(
        [sys.executable, "-m", "modelway", "--config", str(config), *command],
        env={**os.environ, "MODELWAY_GRPC_PORT": "41000", "MODELWAY_OPS_PORT": "42000"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for port in (41000, 41001, 41002, 42000, 42001, 42002, 18080):
        assert f"port_value: {port}}}" in done.stdout or f"port_value: {port}" in done.stdout
    assert "port_value: 41003" not in done.stdout


def test_up_with_workers_serves_reports_a_crash_and_drains_all(tmp_path: Path, redis_server: RedisServer) -> None:
    config_path = tmp_path / "modelway.toml"
    config_path.write_text(TEST_CONFIG)
    stack = _new_stack(tmp_path, config_path, with_account=False)
    # Worker i listens on base + i: runs of free ports, and the shared state every worker needs.
    stack.env.update(
        MODELWAY_GRPC_PORT=str(_free_run(2)), MODELWAY_OPS_PORT=str(_free_run(2)), MODELWAY_REDIS_URL=redis_server.url
    )
    up = start_up(stack, "--workdir", str(tmp_path), "--workers", "2")
    try:
        banner = up.banner()
        secret = banner.split("keep it):\n\n    ", 1)[1].split("\n", 1)[0]
        for _ in range(4):
            reply = request(
                stack.http_port,
                "POST",
                "/api/v1/chat/completions",
                {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]},
                {"Authorization": f"Bearer {secret}"},
            )
            assert reply.status == 200
        # A worker killed from outside is reported, and started again.
        pids = _children(up.process.pid)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        log = tmp_path / "server.log"
        while f"worker 0 (pid {pids[0]}) exited with status -9; starting it again" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        while len(_children(up.process.pid)) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        up.signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert _children(up.process.pid) == []
    finally:
        if up.process.poll() is None:
            up.signal(signal.SIGKILL)
            up.wait(timeout=10)
        _kill_envoy_of(tmp_path)


def _children(pid: int) -> list[int]:
    """The live `modelway serve` processes started by `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if parent == pid and b"serve" in cmdline and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def test_workers_of_a_killed_supervisor_drain_and_exit(tmp_path: Path, redis_server: RedisServer) -> None:
    """`serve --workers 3` on a fresh SQLite file (the schema is made once, before the workers race to),
    then its supervisor is SIGKILLed: the workers, each in its own session, must not serve on unwatched."""
    config_path = tmp_path / "modelway.toml"
    config_path.write_text(TEST_CONFIG)
    stack = _new_stack(tmp_path, config_path, with_account=False)
    ops = _free_run(3)
    stack.env.update(
        MODELWAY_GRPC_PORT=str(_free_run(3)), MODELWAY_OPS_PORT=str(ops), MODELWAY_REDIS_URL=redis_server.url
    )
    log = tmp_path / "server.log"
    with open(log, "ab") as output:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "modelway", "--config", str(config_path), "serve", "--workers", "3"],
            env=stack.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        for index in range(3):
            while not _ready(ops + index):
                assert supervisor.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        workers = _children(supervisor.pid)
        assert len(workers) == 3
        supervisor.kill()
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in workers):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert text.count(f"the supervising process {supervisor.pid} is gone: draining and stopping this worker") == 3
        assert "database is locked" not in text
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if supervisor.poll() is None:
            supervisor.kill()


def _ready(port: int) -> bool:
    try:
        return request(port, "GET", "/readyz").status == 200
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
