"""Configuration: frozen dataclasses loaded once from TOML plus environment overrides."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "ALL_PERMISSIONS",
    "CAPABILITIES",
    "MODEL_TYPES",
    "SQLITE_SYNCHRONOUS",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "LoggingConfig",
    "ModelConfig",
    "PlanConfig",
    "ProviderConfig",
    "RoutingConfig",
    "ServerConfig",
    "SharedConfig",
    "StoreConfig",
    "load_config",
    "redact_url",
]

# What a key may be allowed to do. New keys get DEFAULT_PERMISSIONS.
ALL_PERMISSIONS = ("chat.completions", "images.generations", "models.list", "keys.manage", "usage.read")
DEFAULT_PERMISSIONS = ("chat.completions", "images.generations", "models.list")
MICRO = 1_000_000
DEFAULT_SQLITE_PATH = ".data/modelway.db"  # credits are kept as integer micro-credits: no rounding drift
SQLITE_SYNCHRONOUS = ("full", "normal")
# What a [[models]] entry makes ("embedding" models are listed in the catalog; no route serves them yet).
MODEL_TYPES = ("chat", "image", "embedding")
# What the public catalog (GET /api/models) may say a model can do.
CAPABILITIES = ("vision", "tools", "reasoning", "json_mode", "streaming")

# Environment variable -> (section attribute, field, parser). Ports and paths
# change per machine and per test run; everything else lives in the file.
_ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("MODELWAY_GRPC_PORT", "server", "grpc_port"),
    ("MODELWAY_HTTP_PORT", "server", "http_port"),
    ("MODELWAY_OPS_PORT", "server", "ops_port"),
    ("MODELWAY_DB", "store", "path"),
    ("MODELWAY_STORE_URL", "store", "url"),
    ("MODELWAY_DATA_DIR", "store", "data_dir"),
    ("MODELWAY_REDIS_URL", "shared", "redis_url"),
    ("MODELWAY_WORKERS", "server", "workers"),
)


_SECTIONS = {
    "server",
    "store",
    "keys",
    "limits",
    "bootstrap",
    "plans",
    "providers",
    "models",
    "aliases",
    "routing",
    "logging",
    "shared",
}


class ConfigError(ValueError):
    """The configuration file or environment is invalid."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The gateway's own operations HTTP port, always on loopback: /metrics, /healthz, /readyz.
    ops_port: int = 9464
    shutdown_grace_seconds: float = 10.0
    # The gateway's address as callers reach it (e.g. "https://ai.example.com"), for the links it hands
    # out (image URLs). Empty: taken from each request's Host (or X-Forwarded-Host / -Proto).
    public_url: str = ""
    # Server processes behind the one Envoy (`--workers`); worker i listens on grpc_port + i and
    # ops_port + i. More than one needs [shared] redis_url.
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"server.workers must be from 1 to 64, got {self.workers}")
        for name in ("grpc_port", "http_port", "ops_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"server.{name} must be a TCP port, got {port}")
        for name in ("grpc_port", "ops_port"):
            if getattr(self, name) + self.workers - 1 >= 65536:
                raise ConfigError(f"server.{name} + workers - 1 must be a TCP port, got {getattr(self, name)}")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"server.public_url must be an http:// or https:// URL, got {self.public_url!r}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        # Each port is probed free on its own before start-up; two roles on one would pass and then fail to bind.
        ports = {"grpc_port": self.grpc_port, "http_port": self.http_port, "ops_port": self.ops_port}
        names = list(ports)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if ports[first] == ports[second]:
                    raise ConfigError(f"server.{first} and server.{second} are both {ports[first]}; each needs its own")
        if self.workers > 1:
            # Worker ranges (grpc_port.., ops_port..) must not run into each other or the HTTP port.
            taken: dict[int, str] = {self.http_port: "http_port"}
            for name in ("grpc_port", "ops_port"):
                for port in range(getattr(self, name), getattr(self, name) + self.workers):
                    if port in taken:
                        raise ConfigError(
                            f"with {self.workers} workers, server.{name} + i reaches {port}, "
                            f"which server.{taken[port]} uses; move one of them"
                        )
                    taken[port] = name
        for name in ("grpc_host", "http_host"):
            # Envoy listens on an address, never a name ("localhost" fails only once Envoy starts).
            host = getattr(self, name)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(
                    f'server.{name} must be an IP address such as "127.0.0.1" or "0.0.0.0", got {host!r}'
                ) from None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where accounts, keys and usage live: a SQLite file (`path`, the default) or PostgreSQL (`url`)."""

    path: str = DEFAULT_SQLITE_PATH
    # postgresql://user:password@host:port/database; set: PostgreSQL instead of the SQLite file.
    # It holds a password: never shown (see `url_shown`).
    url: str = field(default="", repr=False)
    # Files kept beside the store (generated images). Empty: the SQLite file's folder, or .data with PostgreSQL.
    data_dir: str = ""
    # How often the key cache asks the store whether another process changed it.
    refresh_seconds: float = 1.0
    usage_flush_seconds: float = 0.25
    # A stream's usage row is written (and what it delivered charged) this often while it runs.
    checkpoint_seconds: float = 2.0
    # How long a generated image's file (and so its URL) lasts; then it is 404 and deleted.
    image_retention_hours: float = 24.0
    # Usage rows kept in memory while the store is unreachable; past this, new calls get 503.
    max_queued_rows: int = 10_000
    # SQLite's own `synchronous` for the file (WAL mode): "full" syncs every commit to the disk, so a row
    # committed before its answer survives a power loss; "normal" syncs at checkpoints only, so a crash of
    # the process still loses nothing, a power loss may lose the last commits. No effect on PostgreSQL.
    sqlite_synchronous: str = "full"

    def __post_init__(self) -> None:
        if self.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ConfigError(f'store.sqlite_synchronous must be "full" or "normal", got {self.sqlite_synchronous!r}')
        if not (math.isfinite(self.image_retention_hours) and self.image_retention_hours > 0):
            hours = self.image_retention_hours
            raise ConfigError(f"store.image_retention_hours must be a number of hours above 0, got {hours}")
        for name in ("refresh_seconds", "usage_flush_seconds", "checkpoint_seconds"):
            value = getattr(self, name)
            # 0 would mean a write per token (or a writer that never sleeps); nan, never.
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"store.{name} must be a number of seconds above 0, got {value}")
        if self.max_queued_rows < 1:
            raise ConfigError(f"store.max_queued_rows must be at least 1, got {self.max_queued_rows}")
        if self.url:
            if not self.url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"store.url must be a postgresql:// URL, got {self.url_shown!r}")
            if not urllib.parse.urlsplit(self.url).hostname and "host=" not in self.url:
                raise ConfigError(f"store.url names no host: {self.url_shown!r}")

    @property
    def url_shown(self) -> str:
        """The URL as logs and errors may show it: the password replaced by ***."""
        return redact_url(self.url)

    @property
    def files_dir(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir)
        return Path(".data") if self.url else Path(self.path).parent


def redact_url(url: str) -> str:
    """`url` with any password (user:password@, or ?password=) replaced by ***.

    Not through urlsplit: a password may hold # ? / (as typed in a config file, unescaped), which
    would end the authority early and leave the rest unmasked. Everything up to the last @ is taken
    as credentials: when in doubt, more is hidden, never less.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    credentials, at, address = rest.rpartition("@")
    if at:
        user, colon, _ = credentials.partition(":")
        shown = (f"{user}:***" if user else "***") if colon else user
        rest = f"{shown}@{address}"
    base, question, query = rest.partition("?")
    if question:
        pairs = (pair.partition("=") for pair in query.split("&"))
        query = "&".join(
            f"{name}=***" if name.lower() == "password" else f"{name}{eq}{value}" for name, eq, value in pairs
        )
        rest = f"{base}?{query}"
    return f"{scheme}://{rest}"


@dataclass(frozen=True, slots=True)
class SharedConfig:
    """State shared by every server process: rate-limit counters, token-budget holds, credit reservations.

    Empty `redis_url`: in this process's memory (one worker). The URL may hold a password: it is
    never shown (repr, logs, errors); `shown_url` is the same address without it.
    """

    redis_url: str = field(default="", repr=False)
    # Each Redis call gives up after this long: a dead Redis refuses calls quickly, never hangs them.
    timeout_seconds: float = 0.5
    # After Redis lost its state, the process rebuilding it waits this long (calls are refused
    # meanwhile) so that every charge being committed when Redis went away has reached the store.
    rebuild_quiet_seconds: float = 2.0
    # A process not heard from this long is gone (crashed): what it held is released.
    process_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"shared.redis_url must be a redis://, rediss:// or unix:// URL, got {self.shown_url}")
        for name in ("timeout_seconds", "rebuild_quiet_seconds", "process_timeout_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"shared.{name} must be a number of seconds above 0, got {value}")

    @property
    def shown_url(self) -> str:
        """The URL as it may be logged: any password replaced by ***."""
        return redact_url(self.redis_url)


@dataclass(frozen=True, slots=True)
class KeysConfig:
    prefix: str = "mw-"

    def __post_init__(self) -> None:
        if not self.prefix or len(self.prefix) > 16:
            raise ConfigError("keys.prefix must be 1 to 16 characters")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The server's log lines: JSON objects (for collectors) or text (for a person), at this level and above."""

    level: str = "info"
    format: str = "json"

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"logging.level must be debug, info, warning or error, got {self.level!r}")
        if self.format not in ("json", "text"):
            raise ConfigError(f'logging.format must be "json" or "text", got {self.format!r}')


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """What an account's plan allows; every limit is per minute or per UTC day."""

    name: str
    chat_requests_per_minute: int
    image_requests_per_minute: int
    max_keys: int
    daily_token_budget: int
    max_input_tokens: int

    def __post_init__(self) -> None:
        for name in (
            "chat_requests_per_minute",
            "image_requests_per_minute",
            "max_keys",
            "daily_token_budget",
            "max_input_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"plans.{self.name}.{name} must be positive")


# Used when the file defines no [plans].
FALLBACK_PLAN = PlanConfig(
    name="free",
    chat_requests_per_minute=10,
    image_requests_per_minute=5,
    max_keys=1,
    daily_token_budget=100_000,
    max_input_tokens=8_000,
)


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    """The operator account `modelway up` creates on an empty store."""

    plan: str = ""  # empty: limits.default_plan
    credits: float = 1_000_000.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    # Over all keys and accounts of this process.
    global_requests_per_minute: int = 6000
    default_plan: str = "free"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """An upstream: its wire format (`kind`), where it is, and the variable holding its secret."""

    name: str
    kind: str
    base_url: str = ""
    api_key_env: str = ""
    # The whole attempt, connecting, and waiting for the first byte (then between reads).
    timeout_seconds: float = 600.0
    connect_timeout_seconds: float = 5.0
    first_byte_timeout_seconds: float = 60.0
    headers: Mapping[str, str] = field(default_factory=dict)
    # echo only: pause between streamed tokens, to make streams observable.
    token_delay_ms: float = 0.0
    # Read once from `api_key_env` when the configuration loads; never printed.
    api_key: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every [[providers]] entry needs a name")
        for name in ("timeout_seconds", "connect_timeout_seconds", "first_byte_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"provider {self.name}: {name} must be positive")
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ConfigError(f"provider {self.name}: headers must be a table of strings")
        if self.kind != "echo" and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"provider {self.name}: base_url must be an http:// or https:// URL")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """How the router treats failing upstreams."""

    # Further attempts on the same model after a retryable failure, before its fallbacks.
    retries: int = 1
    backoff_seconds: float = 0.25  # doubled per attempt, with jitter
    max_backoff_seconds: float = 8.0
    # The whole call, every attempt included.
    deadline_seconds: float = 900.0
    # A provider is skipped after this many consecutive failures, for the cool-down.
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.breaker_failures < 1:
            raise ConfigError("routing.retries must be >= 0 and routing.breaker_failures >= 1")
        for name in ("backoff_seconds", "max_backoff_seconds", "deadline_seconds", "breaker_cooldown_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"routing.{name} must not be negative")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    provider: str
    upstream_model: str = ""
    owned_by: str = "modelway"
    created: int = 0
    max_output_tokens: int = 4096
    # Prices in credits.
    input_credits_per_1k: float = 0.0
    output_credits_per_1k: float = 0.0
    credits_per_call: float = 0.0
    credits_per_image: float = 0.0
    # Other model ids tried in order when this one fails.
    fallbacks: tuple[str, ...] = ()
    # Appended to the caller's system message, or sent alone when there is none.
    system_prompt: str = ""
    # Prompt + max_tokens above this is refused before any upstream call.
    context_length: int | None = None
    # What the model makes: "chat" (text) or "image" (POST /images/generations serves only these).
    type: str = "chat"
    # The public catalog (GET /api/models, no key): a numeric id (0: the entry's place in [[models]],
    # counted from 1), a slug (default: the id), a display name (default: the id), a description, a
    # category, what it can do, and whether its prices stay private (then the catalog shows none).
    number: int = 0
    slug: str = ""
    name: str = ""
    description: str = ""
    category: str = ""
    capabilities: tuple[str, ...] = ()
    private_prices: bool = False

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("every [[models]] entry needs an id")
        if not isinstance(self.fallbacks, (list, tuple)) or not all(isinstance(f, str) for f in self.fallbacks):
            raise ConfigError(f"model {self.id}: fallbacks must be a list of model ids")
        object.__setattr__(self, "fallbacks", tuple(self.fallbacks))
        if self.context_length is not None and self.context_length < 1:
            raise ConfigError(f"model {self.id}: context_length must be positive")
        if self.max_output_tokens < 1:
            raise ConfigError(f"model {self.id}: max_output_tokens must be positive")
        for name in ("input_credits_per_1k", "output_credits_per_1k", "credits_per_call", "credits_per_image"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model {self.id}: {name} must not be negative")
        if self.type not in MODEL_TYPES:
            raise ConfigError(f"model {self.id}: type must be one of {', '.join(MODEL_TYPES)}, got {self.type!r}")
        if not isinstance(self.capabilities, (list, tuple)) or not all(c in CAPABILITIES for c in self.capabilities):
            raise ConfigError(f"model {self.id}: capabilities must be a list of {', '.join(CAPABILITIES)}")
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        if self.number < 0:
            raise ConfigError(f"model {self.id}: number must be positive (or 0 for its place in [[models]])")
        object.__setattr__(self, "slug", self.slug or self.id)
        object.__setattr__(self, "name", self.name or self.id)
        # A slug of digits would read as a numeric id in GET /api/models/{id_or_slug}.
        if self.slug.isdigit():
            raise ConfigError(f"model {self.id}: slug {self.slug!r} must not be all digits (it would read as a number)")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Micro-credits for one call, rounded up to a whole micro-credit."""
        per_1k = prompt_tokens * round(self.input_credits_per_1k * MICRO) + completion_tokens * round(
            self.output_credits_per_1k * MICRO
        )
        return -(-per_1k // 1000) + round(self.credits_per_call * MICRO)

    def image_cost(self, images: int) -> int:
        """Micro-credits for `images` generated images."""
        return images * round(self.credits_per_image * MICRO)

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.id


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    keys: KeysConfig = KeysConfig()
    limits: LimitsConfig = LimitsConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    plans: tuple[PlanConfig, ...] = (FALLBACK_PLAN,)
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = field(default=())
    # Alias name -> ordered model ids or other aliases.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()
    logging: LoggingConfig = LoggingConfig()
    shared: SharedConfig = SharedConfig()

    @property
    def bootstrap_plan(self) -> str:
        return self.bootstrap.plan or self.limits.default_plan

    def plan(self, name: str) -> PlanConfig:
        for plan in self.plans:
            if plan.name == name:
                return plan
        raise ConfigError(f"unknown plan {name!r}")

    def __post_init__(self) -> None:
        plan_names = {plan.name for plan in self.plans}
        for role, name in (("limits.default_plan", self.limits.default_plan), ("bootstrap.plan", self.bootstrap.plan)):
            if name and name not in plan_names:
                raise ConfigError(f"{role} {name!r} is not among the plans ({', '.join(sorted(plan_names))})")
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ConfigError("provider names must be unique")
        ids = [m.id for m in self.models]
        if self.limits.global_requests_per_minute < 1:
            raise ConfigError("limits.global_requests_per_minute must be positive")
        if len(set(ids)) != len(ids):
            raise ConfigError("model ids must be unique")
        # Numeric catalog ids: given, or the entry's place in [[models]].
        numbered = tuple(
            model if model.number else replace(model, number=place) for place, model in enumerate(self.models, 1)
        )
        object.__setattr__(self, "models", numbered)
        for attribute in ("number", "slug"):
            values = [getattr(m, attribute) for m in numbered]
            for value in values:
                if values.count(value) > 1:
                    raise ConfigError(f"two models have the catalog {attribute} {value!r}; each needs its own")
        # The registry is where kinds are dispatched on; it imports this module, so it is imported here.
        from modelway.providers.registry import IMAGE_KINDS, KINDS

        kinds = {p.name: p.kind for p in self.providers}
        for model in self.models:
            if model.provider not in names:
                raise ConfigError(f"model {model.id}: unknown provider {model.provider!r}")
            kind = kinds[model.provider]
            # An unknown kind is refused by the registry, in its own words.
            if model.type == "image" and kind in KINDS and kind not in IMAGE_KINDS:
                raise ConfigError(
                    f'model {model.id}: type "image" needs a provider that makes images; provider {model.provider} '
                    f"is of kind {kind}, which does not (kinds that do: {', '.join(IMAGE_KINDS)})"
                )
            for fallback in model.fallbacks:
                if fallback not in ids and fallback not in self.aliases:
                    raise ConfigError(f"model {model.id}: fallback {fallback!r} is neither a model nor an alias")
        for alias, targets in self.aliases.items():
            if alias in ids:
                raise ConfigError(f"aliases.{alias}: a model already has that id")
            if not targets:
                raise ConfigError(f"aliases.{alias}: needs at least one model")
            for target in targets:
                if target not in ids and target not in self.aliases:
                    raise ConfigError(f"aliases.{alias}: {target!r} is neither a model nor an alias")
        _check_alias_cycles(self.aliases)

    def provider(self, name: str) -> ProviderConfig:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise ConfigError(f"unknown provider {name!r}")


def _check_alias_cycles(aliases: Mapping[str, tuple[str, ...]]) -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ConfigError(f"aliases form a cycle: {' -> '.join((*path, name))}")
        for target in aliases.get(name, ()):
            visit(target, (*path, name))

    for alias in aliases:
        visit(alias, ())


_KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _near(name: str, known: Any) -> str:
    """' (did you mean "x"?)' for the closest known name, or nothing."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def _shown(value: Any) -> str:
    """A value as the TOML file spells it."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def _check_value(where: str, name: str, hint: Any, value: Any) -> None:
    """Scalar fields must hold their type (int and float exactly as TOML writes them; an int is a number)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = tuple(kind for kind in options if kind in _KINDS)
    if not kinds or value is None:
        return  # tables and lists are checked by the dataclass itself
    ok = any(
        isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        for kind in (*kinds, *((int,) if float in kinds else ()))
    )
    if not ok:
        raise ConfigError(f"{where} {name} must be {_KINDS[kinds[0]]}, got {_shown(value)}")


def _section(cls: type[Any], data: Any, where: str, file: str = "modelway.toml") -> Any:
    """A dataclass from one TOML table: unknown fields and wrong types named as the file names them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {where} must be a table, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for name, value in data.items():
        if name not in fields:
            raise ConfigError(f'{file}: {where} has no field "{name}"{_near(name, fields)}')
        _check_value(f"{file}: {where}", name, hints[name], value)
    try:
        return cls(**data)
    except TypeError as exc:  # e.g. a required field left out
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.init]
        raise ConfigError(f"{file}: {where} needs {', '.join(missing) or 'other fields'}") from exc


def _plan(name: str, data: Any, file: str) -> PlanConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: [plans.{name}] must be a table")
    if "name" in data:
        raise ConfigError(f"{file}: [plans.{name}] has no field \"name\" (the table's name is the plan's)")
    plan: PlanConfig = _section(PlanConfig, {**data, "name": name}, f"[plans.{name}]", file)
    return plan


def _entries(cls: type[Any], data: Any, table: str, file: str) -> tuple[Any, ...]:
    if not isinstance(data, list):
        raise ConfigError(f"{file}: {table} must be an array of tables ([[{table}]]), got {_shown(data)}")
    return tuple(_section(cls, entry, f"[[{table}]] entry {index + 1}", file) for index, entry in enumerate(data))


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Reads the TOML file, then applies the MODELWAY_* environment overrides."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    file = Path(path).name
    for name in data:
        if name not in _SECTIONS:
            raise ConfigError(
                f'{file}: there is no section "{name}"{_near(name, _SECTIONS)}; known: {", ".join(sorted(_SECTIONS))}'
            )
    sections: dict[str, Any] = {
        "server": _section(ServerConfig, data.get("server", {}), "[server]", file),
        "store": _section(StoreConfig, data.get("store", {}), "[store]", file),
        "keys": _section(KeysConfig, data.get("keys", {}), "[keys]", file),
        "limits": _section(LimitsConfig, data.get("limits", {}), "[limits]", file),
        "shared": _section(SharedConfig, data.get("shared", {}), "[shared]", file),
    }
    bootstrap = data.get("bootstrap", {})
    sections["store"] = _store_choice(data.get("store", {}), sections["store"], environ, file)
    for variable, section, name in _ENV_OVERRIDES:
        if variable in environ:
            raw = environ[variable]
            current = getattr(sections[section], name)
            try:
                value = type(current)(raw)
            except ValueError:
                expected = _KINDS.get(type(current), "a value")
                raise ConfigError(f"{variable} must be {expected}, got {_shown(raw)}") from None
            sections[section] = replace(sections[section], **{name: value})
    raw_plans = data.get("plans", {})
    if not isinstance(raw_plans, dict):
        raise ConfigError(f"{file}: plans must be tables ([plans.<name>]), got {_shown(raw_plans)}")
    plans = tuple(_plan(name, plan, file) for name, plan in raw_plans.items()) or (FALLBACK_PLAN,)
    providers = _entries(ProviderConfig, data.get("providers", []), "providers", file)
    models = _entries(ModelConfig, data.get("models", []), "models", file)
    return Config(
        plans=plans,
        bootstrap=_section(BootstrapConfig, bootstrap, "[bootstrap]", file),
        providers=_with_secrets(providers, models, environ),
        models=models,
        aliases=_aliases(data.get("aliases", {})),
        routing=_section(RoutingConfig, data.get("routing", {}), "[routing]", file),
        logging=_section(LoggingConfig, data.get("logging", {}), "[logging]", file),
        **sections,
    )


def _store_choice(data: dict[str, Any], store: StoreConfig, environ: Mapping[str, str], file: str) -> StoreConfig:
    """SQLite (`path`) or PostgreSQL (`url`), never both: the environment's choice replaces the file's."""
    both = "set either [store] path (SQLite) or [store] url (PostgreSQL), not both"
    if "MODELWAY_DB" in environ and "MODELWAY_STORE_URL" in environ:
        raise ConfigError(f"MODELWAY_DB and MODELWAY_STORE_URL are both set: {both}")
    if "path" in data and "url" in data:
        raise ConfigError(f"{file}: {both}")
    if "MODELWAY_STORE_URL" in environ:
        return replace(store, path=DEFAULT_SQLITE_PATH)
    if "MODELWAY_DB" in environ:
        return replace(store, url="")
    return store


def _aliases(data: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict) or not all(
        isinstance(targets, list) and all(isinstance(t, str) for t in targets) for targets in data.values()
    ):
        raise ConfigError('[aliases] maps each alias to a list of model ids, e.g. fast = ["gpt-4o-mini"]')
    return {name: tuple(targets) for name, targets in data.items()}


def _with_secrets(
    providers: tuple[ProviderConfig, ...], models: tuple[ModelConfig, ...], environ: Mapping[str, str]
) -> tuple[ProviderConfig, ...]:
    """Each provider with its secret, read from its variable this once."""
    used = {model.provider for model in models}
    loaded = []
    for provider in providers:
        secret = environ.get(provider.api_key_env, "") if provider.api_key_env else ""
        if provider.api_key_env and not secret and provider.name in used:
            raise ConfigError(
                f"provider {provider.name}: the environment variable {provider.api_key_env} "
                "(its api_key_env) is not set"
            )
        loaded.append(replace(provider, api_key=secret))
    return tuple(loaded)
