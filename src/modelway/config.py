"""Configuration: frozen dataclasses loaded once from TOML plus environment overrides."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "ModelConfig", "ProviderConfig", "ServerConfig", "load_config"]

# Environment variable -> (section attribute, field, parser). Ports and paths
# change per machine and per test run; everything else lives in the file.
_ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("MODELWAY_GRPC_PORT", "server", "grpc_port"),
    ("MODELWAY_HTTP_PORT", "server", "http_port"),
    ("MODELWAY_ADMIN_PORT", "server", "admin_port"),
    ("MODELWAY_DB", "store", "path"),
)


class ConfigError(ValueError):
    """The configuration file or environment is invalid."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    admin_port: int = 9901
    shutdown_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port", "admin_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"server.{name} must be a TCP port, got {port}")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str = ".data/modelway.db"
    # How often the key cache asks SQLite whether another process changed it.
    refresh_seconds: float = 1.0
    usage_flush_seconds: float = 0.25


@dataclass(frozen=True, slots=True)
class KeysConfig:
    prefix: str = "mw-"

    def __post_init__(self) -> None:
        if not self.prefix or len(self.prefix) > 16:
            raise ConfigError("keys.prefix must be 1 to 16 characters")


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str = ""
    api_key_env: str = ""
    # echo only: pause between streamed tokens, to make streams observable.
    token_delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    provider: str
    upstream_model: str = ""
    owned_by: str = "modelway"
    created: int = 0
    max_output_tokens: int = 4096

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("every [[models]] entry needs an id")
        if self.max_output_tokens < 1:
            raise ConfigError(f"model {self.id}: max_output_tokens must be positive")

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.id


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    keys: KeysConfig = KeysConfig()
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ConfigError("provider names must be unique")
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ConfigError("model ids must be unique")
        for model in self.models:
            if model.provider not in names:
                raise ConfigError(f"model {model.id}: unknown provider {model.provider!r}")


def _section(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"[{where}]: {exc}") from exc


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Reads the TOML file, then applies the MODELWAY_* environment overrides."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    sections: dict[str, Any] = {
        "server": _section(ServerConfig, data.get("server", {}), "server"),
        "store": _section(StoreConfig, data.get("store", {}), "store"),
        "keys": _section(KeysConfig, data.get("keys", {}), "keys"),
    }
    for variable, section, name in _ENV_OVERRIDES:
        if variable in environ:
            raw = environ[variable]
            current = getattr(sections[section], name)
            try:
                value = type(current)(raw)
            except ValueError as exc:
                raise ConfigError(f"{variable}={raw!r}: {exc}") from exc
            sections[section] = replace(sections[section], **{name: value})
    providers = tuple(_section(ProviderConfig, p, "providers") for p in data.get("providers", []))
    models = tuple(_section(ModelConfig, m, "models") for m in data.get("models", []))
    return Config(providers=providers, models=models, **sections)
