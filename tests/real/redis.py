"""A real redis-server (the Debian package) on a free 127.0.0.1 port, in a temp dir, without persistence
unless asked (then `SAVE` writes dump.rdb in the temp dir and a restart loads it, as a production Redis would)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["REDIS_SERVER", "RedisServer", "redis_missing"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_missing() -> str | None:
    """Why a real Redis cannot start here (None when it can)."""
    if not Path(REDIS_SERVER).exists():
        return "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process; `restart` brings it back empty on the same port (as after a crash)."""

    workdir: Path
    port: int = field(default_factory=_free_port)
    password: str = ""
    persist: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        # No persistence by default: a restart comes back empty, which is what the rebuild must cope with.
        # With `persist`, a restart loads the last dump.rdb (written by SAVE): the stale-snapshot case.
        args += ["--save", "3600 1" if self.persist else "", "--dbfilename", "dump.rdb", "--appendonly", "no"]
        args += ["--daemonize", "no", "--protected-mode", "yes"]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    reply = conn.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Gone at once, state and all (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()
