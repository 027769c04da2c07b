"""`make run` (`modelway up`) as an operator meets it: checks before printing, ready before the key, Ctrl-C drains."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelway.app import Gateway, StartupError
from modelway.config import load_config
from tests.conftest import ROOT, TEST_CONFIG, Up, free_port, running_up, start_up
from tests.e2e.http import read_slow_stream, request
from tests.real.postgres import connect_db

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
        with connect_db(up.stack.db_path) as db:
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
        with connect_db(up.stack.db_path) as db:
            assert db.execute("SELECT status FROM usage WHERE model = 'echo-slow'").fetchall() == [(200,)]

        # Again on the same store: no new key, and a curl line a shell runs as printed.
        again = start_up(up.stack, "--workdir", str(tmp_path))
        try:
            banner = again.banner()
            assert "export MODELWAY_KEY=" in banner and "Created" not in banner
            # The commands it suggests read the same configuration.
            assert f"modelway --config {up.stack.config_path} keys create --account" in banner
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


def accounts(up: Up) -> int:
    with connect_db(up.stack.db_path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM accounts").fetchone()
    return int(count)


def other_ports(up: Up) -> dict[str, str]:
    """The same store and config on ports of its own."""
    ports = {name: str(free_port()) for name in ("MODELWAY_HTTP_PORT", "MODELWAY_GRPC_PORT", "MODELWAY_OPS_PORT")}
    return {**up.stack.env, **ports}


def test_a_second_gateway_with_the_same_workdir_is_refused_and_leaves_the_first_alone(tmp_path: Path) -> None:
    with running_up(tmp_path, TEST_CONFIG) as up:
        key = secret_of(up.banner())
        socket_before = (tmp_path / "envoy-admin.sock").stat().st_ino
        second = run_cli(
            up, "--config", str(up.stack.config_path), "up", "--workdir", str(tmp_path), env=other_ports(up)
        )
        assert (second.returncode, second.stdout) == (2, ""), second.stderr
        assert second.stderr.count("\n") == 1 and "--workdir" in second.stderr
        # The first gateway's Envoy kept its socket and config, and still serves.
        assert (tmp_path / "envoy-admin.sock").stat().st_ino == socket_before
        assert f"port_value: {up.stack.http_port}" in (tmp_path / "envoy.yaml").read_text()
        assert request(up.stack.http_port, "POST", CHAT, HELLO, {"Authorization": f"Bearer {key}"}).status == 200
        up.signal(signal.SIGINT)
        assert up.wait() == 0
        assert refused(up.stack.http_port)


def edge_root(tmp_path: Path, change: tuple[str, str]) -> Path:
    """A --root whose Envoy template differs from the repository's by one change (the rest are links)."""
    root = tmp_path / "root"
    (root / "envoy").mkdir(parents=True)
    (root / "build").mkdir()
    template = (ROOT / "envoy" / "envoy.yaml").read_text()
    assert change[0] in template
    (root / "envoy" / "envoy.yaml").write_text(template.replace(*change))
    os.symlink(ROOT / "envoy" / "errors.lua", root / "envoy" / "errors.lua")
    os.symlink(ROOT / "build" / "modelway.pb", root / "build" / "modelway.pb")
    return root


def test_a_failure_after_the_checks_makes_no_key(tmp_path: Path) -> None:
    """Envoy failing to start (here: a template it refuses) stops `up` before any account or key exists."""
    root = edge_root(tmp_path, ("enable_reuse_port: false", "enable_reuse_port: maybe"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with running_up(workdir, TEST_CONFIG, "--root", str(root)) as up:
        assert up.wait(timeout=60) == 2
        assert "".join(up.stdout) == ""
        assert accounts(up) == 0
        assert "Envoy exited" in (workdir / "server.log").read_text()


def test_a_signal_while_waiting_for_readiness_prints_nothing_and_makes_no_key(tmp_path: Path) -> None:
    """Envoy up but the gateway never ready through it (its readiness route leads nowhere): Ctrl-C ends the wait."""
    nowhere = f"[{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}}}}}]"
    root = edge_root(tmp_path, ("lb_endpoints: ${ops_endpoints}", f"lb_endpoints: {nowhere}"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with running_up(workdir, TEST_CONFIG, "--root", str(root)) as up:
        deadline = time.monotonic() + 30
        while "gRPC listening" not in (workdir / "server.log").read_text():
            assert time.monotonic() < deadline and up.process.poll() is None
            time.sleep(0.05)
        time.sleep(1)  # well into the wait for readiness
        up.signal(signal.SIGINT)
        assert up.wait(timeout=15) == 0
        assert "".join(up.stdout) == ""
        assert accounts(up) == 0
        assert refused(up.stack.http_port)


def test_sighup_drains_like_ctrl_c(tmp_path: Path) -> None:
    with running_up(tmp_path, TEST_CONFIG) as up:
        key = secret_of(up.banner())
        received: list[bytes] = []
        started = threading.Event()
        streamer = threading.Thread(target=read_slow_stream, args=(up.stack.http_port, key, 50, received, started))
        streamer.start()
        assert started.wait(10)
        up.signal(signal.SIGHUP)
        streamer.join(timeout=30)
        assert received and received[0].endswith(b"data: [DONE]\n\n")
        assert up.wait() == 0
        assert refused(up.stack.http_port)


def test_two_roles_on_one_port_stop_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG)
    port = str(free_port())
    env = {"MODELWAY_DB": str(tmp_path / "modelway.db"), "PATH": "/usr/bin:/bin"}
    env |= {"MODELWAY_GRPC_PORT": port, "MODELWAY_OPS_PORT": port}
    done = subprocess.run(
        [sys.executable, "-m", "modelway", "--config", str(config), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    expected = f"modelway: server.grpc_port and server.ops_port are both {port}; each needs its own\n"
    assert (done.returncode, done.stderr) == (2, expected)


async def test_a_port_taken_after_the_checks_stops_start_up_and_releases_the_rest(tmp_path: Path) -> None:
    """The gRPC port taken between the checks and the bind: one line, and what had started is closed again."""
    config_path = tmp_path / "modelway.toml"
    config_path.write_text(TEST_CONFIG)
    ops_port = free_port()
    env = {"MODELWAY_DB": str(tmp_path / "modelway.db"), "MODELWAY_OPS_PORT": str(ops_port)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = Gateway(load_config(config_path, {**env, "MODELWAY_GRPC_PORT": str(port)}))
        try:
            await gateway.start()
        except StartupError as error:
            assert str(error).startswith(f"cannot listen on 127.0.0.1:{port} (server.grpc_port)")
        else:
            raise AssertionError("started on a taken port")
    # The operations port and the store were let go: a gateway on the same ones starts and stops.
    again = Gateway(load_config(config_path, {**env, "MODELWAY_GRPC_PORT": str(free_port())}))
    await again.start()
    await again.stop()
