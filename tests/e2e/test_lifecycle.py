"""`make run` (`modelway up`) as an operator meets it: checks before printing, ready before the key, Ctrl-C drains."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG, Up, free_port, running_up, start_up
from tests.e2e.http import read_slow_stream, request

CHAT = "/api/v1/chat/completions"
HELLO = {"model": "echo-1", "messages": [{"role": "user", "content": "hello"}]}


def secret_of(banner: str) -> str:
    lines = banner.splitlines()
    return next(
        line.strip()
        for line in lines[lines.index("Created an operator account and its first API key (shown once, keep it):") + 1 :]
        if line.strip()
    )


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def run_cli(up: Up, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelway", *args],
        env=env or up.stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_run_checks_then_prints_a_working_key_and_ctrl_c_drains_streams(tmp_path: Path) -> None:
    with running_up(tmp_path, TEST_CONFIG) as up:
        banner = up.banner()
        key = secret_of(banner)
        port = up.stack.http_port
        # Printed only once the gateway answers through Envoy: the key works at once.
        assert f'-H "Authorization: Bearer {key}"' in banner
        assert request(port, "POST", CHAT, HELLO, {"Authorization": f"Bearer {key}"}).status == 200

        # A second `make run` while this one runs: one line, exit 2, no key, no banner; this one keeps serving.
        second = run_cli(up, "--config", str(up.stack.config_path), "up", "--workdir", str(tmp_path / "second"))
        assert (second.returncode, second.stdout) == (2, "")
        assert second.stderr == f"modelway: port {port} (server.http_port) is already in use\n"
        env = {**up.stack.env, "MODELWAY_HTTP_PORT": str(free_port())}
        second = run_cli(up, "--config", str(up.stack.config_path), "up", env=env)
        assert (second.returncode, second.stdout) == (2, "")
        assert second.stderr == f"modelway: port {up.stack.grpc_port} (server.grpc_port) is already in use\n"
        with sqlite3.connect(up.stack.db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM accounts").fetchone() == (1,)

        # Ctrl-C (SIGINT to the terminal's process group) while a stream runs through Envoy.
        received: list[bytes] = []
        started = threading.Event()
        streamer = threading.Thread(target=read_slow_stream, args=(port, key, 100, received, started))
        streamer.start()
        assert started.wait(10)
        up.signal(signal.SIGINT)
        streamer.join(timeout=30)
        assert received and received[0].endswith(b"data: [DONE]\n\n")
        assert received[0].count(b"data: ") > 100
        assert up.wait() == 0
        assert refused(port)  # Envoy was stopped after the drain
        with sqlite3.connect(up.stack.db_path) as db:
            assert db.execute("SELECT status FROM usage WHERE model = 'echo-slow'").fetchall() == [(200,)]

        # Again on the same store: no new key, and a curl line a shell runs as printed.
        again = start_up(up.stack, "--workdir", str(tmp_path))
        try:
            banner = again.banner()
            assert "export MODELWAY_KEY=" in banner and "Created" not in banner
            curl = next(line.strip() for line in banner.splitlines() if line.strip().startswith("curl "))
            assert '-H "Authorization: Bearer $MODELWAY_KEY"' in curl
            shell = subprocess.run(
                ["bash", "-c", curl], env={**up.stack.env, "MODELWAY_KEY": key}, capture_output=True, timeout=30
            )
            assert json.loads(shell.stdout)["object"] == "chat.completion"
        finally:
            again.signal(signal.SIGTERM)
            assert again.wait() == 0


def test_a_second_signal_exits_at_once_and_stops_envoy(tmp_path: Path) -> None:
    with running_up(tmp_path, TEST_CONFIG) as up:  # grace 5 s
        key = secret_of(up.banner())
        received: list[bytes] = []
        started = threading.Event()
        streamer = threading.Thread(target=read_slow_stream, args=(up.stack.http_port, key, 1000, received, started))
        streamer.start()
        assert started.wait(10)
        up.signal(signal.SIGINT)
        time.sleep(0.5)
        began = time.monotonic()
        up.signal(signal.SIGINT)
        assert up.wait(timeout=5) == 1
        assert time.monotonic() - began < 3
        streamer.join(timeout=10)
        assert not received[0].endswith(b"data: [DONE]\n\n")
        assert refused(up.stack.http_port)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (('kind = "echo"\n', 'kind = "ecko"\nbase_url = "http://127.0.0.1:9"\n'), "unknown kind 'ecko'"),
        (("[server]\n", "[server]\nshutdown_grace_secnods = 1\n"), "shutdown_grace_secnods"),
    ],
)
def test_a_bad_config_stops_make_run_with_one_line_before_anything(
    tmp_path: Path, change: tuple[str, str], line: str
) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG.replace(*change, 1))
    env = {"MODELWAY_DB": str(tmp_path / "modelway.db"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "modelway", "up", "--config", str(config), "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("modelway: ") and done.stderr.count("\n") == 1 and line in done.stderr
    assert not (tmp_path / "modelway.db").exists() and not (tmp_path / "envoy.yaml").exists()


def test_config_is_accepted_after_any_subcommand(tmp_path: Path) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG)
    env = {"MODELWAY_DB": str(tmp_path / "modelway.db"), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelway", *args], env=env, capture_output=True, text=True)

    created = cli("accounts", "create", "--name", "a", "--plan", "tester", "--config", str(config))
    assert created.returncode == 0, created.stderr
    assert "tester" in cli("accounts", "list", "--config", str(config)).stdout
    assert "${" not in cli("envoy-config", "--config", str(config)).stdout
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = subprocess.run(
            [sys.executable, "-m", "modelway", "serve", "--config", str(config)],
            env={**env, "MODELWAY_GRPC_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (served.returncode, served.stderr) == (2, f"modelway: port {port} (server.grpc_port) is already in use\n")
