"""Tests for load_config: the TOML file, the environment overrides, and what is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelway.config import ConfigError, ProviderConfig, ServerConfig, load_config
from modelway.providers.echo import EchoProvider
from modelway.providers.registry import ProviderRegistry

SHIPPED = Path(__file__).resolve().parents[2] / "modelway.toml"

BASE = """
[[providers]]
name = "echo"
kind = "echo"

[[models]]
id = "echo-1"
provider = "echo"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "modelway.toml"
    path.write_text(text)
    return path


def test_shipped_config() -> None:
    config = load_config(SHIPPED, {})
    server = config.server
    assert (server.grpc_host, server.grpc_port) == ("127.0.0.1", 50051)
    assert (server.http_host, server.http_port, server.admin_port) == ("127.0.0.1", 8080, 9901)
    assert server.shutdown_grace_seconds == 10
    assert config.store.path == ".data/modelway.db"
    assert config.keys.prefix == "mw-"
    assert [(p.name, p.kind, p.token_delay_ms) for p in config.providers] == [("echo", "echo", 0)]
    assert [(m.id, m.provider, m.owned_by, m.created, m.max_output_tokens) for m in config.models] == [
        ("echo-1", "echo", "modelway", 1767225600, 4096),
        ("echo-mini", "echo", "modelway", 1767225600, 256),
    ]
    assert config.models[1].upstream_name == "echo-mini"


def test_defaults_for_missing_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), {})
    assert config.server == ServerConfig()
    assert (config.server.grpc_port, config.server.http_port, config.server.admin_port) == (50051, 8080, 9901)
    assert config.store.path == ".data/modelway.db"
    assert config.keys.prefix == "mw-"
    assert config.models[0].max_output_tokens == 4096


def test_upstream_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + 'upstream_model = "echo-upstream"\n'), {})
    assert config.models[0].upstream_name == "echo-upstream"


def test_environment_overrides(tmp_path: Path) -> None:
    environ = {
        "MODELWAY_GRPC_PORT": "41001",
        "MODELWAY_HTTP_PORT": "41002",
        "MODELWAY_ADMIN_PORT": "41003",
        "MODELWAY_DB": str(tmp_path / "x.db"),
        "MODELWAY_UNRELATED": "ignored",
    }
    config = load_config(SHIPPED, environ)
    assert (config.server.grpc_port, config.server.http_port, config.server.admin_port) == (41001, 41002, 41003)
    assert config.store.path == str(tmp_path / "x.db")
    # Everything else still comes from the file.
    assert config.server.grpc_host == "127.0.0.1"
    assert config.store.refresh_seconds == 1.0
    assert [m.id for m in config.models] == ["echo-1", "echo-mini"]


def test_one_override_leaves_the_others(tmp_path: Path) -> None:
    config = load_config(SHIPPED, {"MODELWAY_HTTP_PORT": "18080"})
    assert (config.server.grpc_port, config.server.http_port, config.server.admin_port) == (50051, 18080, 9901)


@pytest.mark.parametrize("variable", ["MODELWAY_GRPC_PORT", "MODELWAY_HTTP_PORT", "MODELWAY_ADMIN_PORT"])
@pytest.mark.parametrize("raw", ["http", "80.5", ""])
def test_non_integer_port_override(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config(SHIPPED, {variable: raw})


@pytest.mark.parametrize("raw", ["0", "65536", "-1"])
def test_out_of_range_port_override(raw: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"server.admin_port must be a TCP port, got {raw}")):
        load_config(SHIPPED, {"MODELWAY_ADMIN_PORT": raw})


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (0, False), (65536, False), (70000, False)])
def test_port_range_in_file(tmp_path: Path, port: int, ok: bool) -> None:
    path = write(tmp_path, f"[server]\nhttp_port = {port}\n" + BASE)
    if ok:
        assert load_config(path, {}).server.http_port == port
    else:
        with pytest.raises(ConfigError, match=re.escape(f"server.http_port must be a TCP port, got {port}")):
            load_config(path, {})


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("[server]\ngrpc_prot = 1\n" + BASE, "server"),
        ("[store]\nfile = 'x.db'\n" + BASE, "store"),
        ("[keys]\nprefix = 'a-'\nsuffix = 'b'\n" + BASE, "keys"),
        (BASE + "max_tokens = 5\n", "models"),
        ('[[providers]]\nname = "echo"\nkind = "echo"\nurl = "http://x"\n', "providers"),
    ],
)
def test_unknown_key_in_a_section(tmp_path: Path, text: str, section: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert str(caught.value).startswith(f"[{section}]:")


def test_model_with_unknown_provider(tmp_path: Path) -> None:
    text = BASE + '\n[[models]]\nid = "gpt-x"\nprovider = "openai"\n'
    with pytest.raises(ConfigError, match="model gpt-x: unknown provider 'openai'"):
        load_config(write(tmp_path, text), {})


def test_duplicate_model_ids(tmp_path: Path) -> None:
    text = BASE + '\n[[models]]\nid = "echo-1"\nprovider = "echo"\nmax_output_tokens = 8\n'
    with pytest.raises(ConfigError, match="model ids must be unique"):
        load_config(write(tmp_path, text), {})


def test_duplicate_provider_names(tmp_path: Path) -> None:
    text = BASE + '\n[[providers]]\nname = "echo"\nkind = "echo"\n'
    with pytest.raises(ConfigError, match="provider names must be unique"):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[keys]\nprefix = ""\n', "keys.prefix"),
        ('[keys]\nprefix = "' + "x" * 17 + '"\n', "keys.prefix"),
    ],
)
def test_invalid_keys_prefix(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, extra + BASE), {})


def test_model_needs_positive_max_output_tokens(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model echo-1: max_output_tokens must be positive"):
        load_config(write(tmp_path, BASE + "max_output_tokens = 0\n"), {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", {})


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(write(tmp_path, "[server\n"), {})


# --- ProviderRegistry ---------------------------------------------------------


def test_registry_builds_echo() -> None:
    registry = ProviderRegistry(load_config(SHIPPED, {}).providers)
    assert isinstance(registry.get("echo"), EchoProvider)
    with pytest.raises(KeyError):
        registry.get("absent")


def test_registry_rejects_unknown_kind() -> None:
    configs = [ProviderConfig(name="echo", kind="echo"), ProviderConfig(name="main", kind="openai")]
    with pytest.raises(ConfigError) as caught:
        ProviderRegistry(configs)
    message = str(caught.value)
    assert "provider main" in message
    assert "'openai'" in message
    assert message.endswith("(known: echo)")
