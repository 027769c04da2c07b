"""Tests for load_config: the TOML file, the environment overrides, and what is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelway.config import Config, ConfigError, ModelConfig, ProviderConfig, RoutingConfig, ServerConfig, load_config
from modelway.providers.echo import EchoProvider
from modelway.providers.http import HttpProvider, Transport
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
    assert (server.http_host, server.http_port, server.ops_port) == ("127.0.0.1", 8080, 9464)
    assert server.shutdown_grace_seconds == 10
    assert config.store.path == ".data/modelway.db"
    assert config.keys.prefix == "mw-"
    assert [(p.name, p.kind, p.token_delay_ms) for p in config.providers] == [("echo", "echo", 0)]
    assert [(m.id, m.provider, m.owned_by, m.created, m.max_output_tokens) for m in config.models] == [
        ("echo-1", "echo", "modelway", 1767225600, 4096),
        ("echo-mini", "echo", "modelway", 1767225600, 256),
        ("echo-image", "echo", "modelway", 1767225600, 4096),
    ]
    assert config.models[1].upstream_name == "echo-mini"
    assert [m.type for m in config.models] == ["chat", "chat", "image"]
    # The documented plan table: chat / images per minute.
    assert [(p.name, p.chat_requests_per_minute, p.image_requests_per_minute) for p in config.plans][:3] == [
        ("free", 10, 5),
        ("standard", 60, 20),
        ("pro", 300, 60),
    ]


def test_defaults_for_missing_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), {})
    assert config.server == ServerConfig()
    assert (config.server.grpc_port, config.server.http_port, config.server.ops_port) == (50051, 8080, 9464)
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
        "MODELWAY_OPS_PORT": "41003",
        "MODELWAY_DB": str(tmp_path / "x.db"),
        "MODELWAY_UNRELATED": "ignored",
    }
    config = load_config(SHIPPED, environ)
    assert (config.server.grpc_port, config.server.http_port, config.server.ops_port) == (41001, 41002, 41003)
    assert config.store.path == str(tmp_path / "x.db")
    # Everything else still comes from the file.
    assert config.server.grpc_host == "127.0.0.1"
    assert config.store.refresh_seconds == 1.0
    assert [m.id for m in config.models] == ["echo-1", "echo-mini", "echo-image"]


def test_one_override_leaves_the_others(tmp_path: Path) -> None:
    config = load_config(SHIPPED, {"MODELWAY_HTTP_PORT": "18080"})
    assert (config.server.grpc_port, config.server.http_port, config.server.ops_port) == (50051, 18080, 9464)


@pytest.mark.parametrize("variable", ["MODELWAY_GRPC_PORT", "MODELWAY_HTTP_PORT", "MODELWAY_OPS_PORT"])
@pytest.mark.parametrize("raw", ["http", "80.5", ""])
def test_non_integer_port_override(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config(SHIPPED, {variable: raw})


@pytest.mark.parametrize("raw", ["0", "65536", "-1"])
def test_out_of_range_port_override(raw: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"server.ops_port must be a TCP port, got {raw}")):
        load_config(SHIPPED, {"MODELWAY_OPS_PORT": raw})


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MODELWAY_OPS_PORT": "50051"}, "server.grpc_port and server.ops_port are both 50051; each needs its own"),
        ({"MODELWAY_HTTP_PORT": "50051"}, "server.grpc_port and server.http_port are both 50051; each needs its own"),
        ({"MODELWAY_HTTP_PORT": "9464"}, "server.http_port and server.ops_port are both 9464; each needs its own"),
    ],
)
def test_two_roles_on_one_port_are_refused(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SHIPPED, variables)


@pytest.mark.parametrize(("host", "ok"), [("127.0.0.1", True), ("0.0.0.0", True), ("::1", True), ("localhost", False)])
@pytest.mark.parametrize("name", ["http_host", "grpc_host"])
def test_hosts_are_ip_addresses(tmp_path: Path, name: str, host: str, ok: bool) -> None:
    path = write(tmp_path, f'[server]\n{name} = "{host}"\n' + BASE)
    if ok:
        assert getattr(load_config(path, {}).server, name) == host
    else:
        with pytest.raises(ConfigError, match=re.escape(f"server.{name} must be an IP address")):
            load_config(path, {})


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (0, False), (65536, False), (70000, False)])
def test_port_range_in_file(tmp_path: Path, port: int, ok: bool) -> None:
    path = write(tmp_path, f"[server]\nhttp_port = {port}\n" + BASE)
    if ok:
        assert load_config(path, {}).server.http_port == port
    else:
        with pytest.raises(ConfigError, match=re.escape(f"server.http_port must be a TCP port, got {port}")):
            load_config(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\ngrpc_prot = 1\n" + BASE, '[server] has no field "grpc_prot" (did you mean "grpc_port"?)'),
        (
            "[server]\nshutdown_grace_secnods = 3\n" + BASE,
            '[server] has no field "shutdown_grace_secnods" (did you mean "shutdown_grace_seconds"?)',
        ),
        ("[store]\nfile = 'x.db'\n" + BASE, '[store] has no field "file"'),
        ("[keys]\nprefix = 'a-'\nsuffix = 'b'\n" + BASE, '[keys] has no field "suffix"'),
        (BASE + "max_tokens = 5\n", '[[models]] entry 1 has no field "max_tokens" (did you mean "max_output_tokens"?)'),
        ('[[providers]]\nname = "echo"\nkind = "echo"\nurl = "http://x"\n', '[[providers]] entry 1 has no field "url"'),
        ("[plans.pro]\nmax_key = 3\n" + BASE, '[plans.pro] has no field "max_key" (did you mean "max_keys"?)'),
        ("[routing]\nattempts = 3\n" + BASE, '[routing] has no field "attempts"'),
    ],
)
def test_unknown_field_names_the_table_and_the_near_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert str(caught.value) == f"modelway.toml: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\ngrpc_port = "abc"\n' + BASE, '[server] grpc_port must be an integer, got "abc"'),
        ("[server]\ngrpc_port = 1.5\n" + BASE, "[server] grpc_port must be an integer, got 1.5"),
        ("[server]\ngrpc_port = true\n" + BASE, "[server] grpc_port must be an integer, got true"),
        (
            '[server]\nshutdown_grace_seconds = "5"\n' + BASE,
            '[server] shutdown_grace_seconds must be a number, got "5"',
        ),
        ("[keys]\nprefix = 7\n" + BASE, "[keys] prefix must be a string, got 7"),
        ("[store]\nusage_flush_seconds = [1]\n" + BASE, "[store] usage_flush_seconds must be a number, got [1]"),
        (BASE + 'context_length = "big"\n', '[[models]] entry 1 context_length must be an integer, got "big"'),
        (
            '[plans.pro]\nchat_requests_per_minute = "10"\n' + BASE,
            '[plans.pro] chat_requests_per_minute must be an integer, got "10"',
        ),
        ("server = 3\n" + BASE, "[server] must be a table, got 3"),
        ('providers = "echo"\n', 'providers must be an array of tables ([[providers]]), got "echo"'),
    ],
)
def test_wrong_types_say_what_is_expected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert str(caught.value) == f"modelway.toml: {message}"
    assert "<" not in str(caught.value) and "__init__" not in str(caught.value)


def test_a_float_field_takes_an_integer(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nshutdown_grace_seconds = 3\n" + BASE), {})
    assert config.server.shutdown_grace_seconds == 3


def test_a_missing_required_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("modelway.toml: [[models]] entry 1 needs provider")):
        load_config(write(tmp_path, '[[models]]\nid = "x"\n'), {})


def test_model_with_unknown_provider(tmp_path: Path) -> None:
    text = BASE + '\n[[models]]\nid = "gpt-x"\nprovider = "openai"\n'
    with pytest.raises(ConfigError, match="model gpt-x: unknown provider 'openai'"):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_an_image_model_needs_a_provider_that_makes_images(tmp_path: Path, kind: str) -> None:
    provider = f'\n[[providers]]\nname = "up"\nkind = "{kind}"\nbase_url = "https://x.test"\n'
    text = BASE + provider + '\n[[models]]\nid = "pix"\nprovider = "up"\ntype = "image"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {})
    assert str(caught.value) == (
        f'model pix: type "image" needs a provider that makes images; provider up is of kind {kind}, which does not '
        "(kinds that do: echo, openai)"
    )
    # The same provider serves chat models, and an openai or echo provider serves image models.
    chat = text.replace('type = "image"', 'type = "chat"')
    assert load_config(write(tmp_path, chat), {}).models[-1].type == "chat"
    openai = text.replace(f'kind = "{kind}"', 'kind = "openai"')
    assert load_config(write(tmp_path, openai), {}).models[-1].type == "image"


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
    registry = ProviderRegistry(load_config(SHIPPED, {}).providers, Transport())
    assert isinstance(registry.get("echo"), EchoProvider)
    with pytest.raises(KeyError):
        registry.get("absent")


def test_registry_builds_http_providers() -> None:
    configs = [
        ProviderConfig(name=kind, kind=kind, base_url="https://x.test") for kind in ("openai", "anthropic", "gemini")
    ]
    registry = ProviderRegistry(configs, Transport())
    assert all(isinstance(registry.get(kind), HttpProvider) for kind in ("openai", "anthropic", "gemini"))


def test_registry_rejects_unknown_kind() -> None:
    configs = [ProviderConfig(name="echo", kind="echo"), ProviderConfig(name="main", kind="grpc", base_url="http://x")]
    with pytest.raises(ConfigError) as caught:
        ProviderRegistry(configs, Transport())
    message = str(caught.value)
    assert "provider main" in message
    assert "'grpc'" in message
    assert message.endswith("(known: echo, anthropic, gemini, openai)")


# --- providers ----------------------------------------------------------------

UPSTREAM = """
[[providers]]
name = "oai"
kind = "openai"
base_url = "https://api.example.com/v1/"
api_key_env = "OAI_KEY"
timeout_seconds = 120
connect_timeout_seconds = 2.5
first_byte_timeout_seconds = 30
headers = { "OpenAI-Organization" = "org-1" }

[[models]]
id = "gpt-x"
provider = "oai"
upstream_model = "gpt-4o"
"""
SECRET = "sk-very-secret-value-1234"


def test_http_provider(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + UPSTREAM), {"OAI_KEY": SECRET})
    provider = config.provider("oai")
    assert (provider.kind, provider.base_url, provider.api_key_env) == (
        "openai",
        "https://api.example.com/v1",
        "OAI_KEY",
    )
    assert (provider.timeout_seconds, provider.connect_timeout_seconds, provider.first_byte_timeout_seconds) == (
        120,
        2.5,
        30,
    )
    assert provider.headers == {"OpenAI-Organization": "org-1"}
    assert provider.api_key == SECRET
    assert config.provider("echo").api_key == ""


def test_provider_defaults() -> None:
    provider = ProviderConfig(name="p", kind="anthropic", base_url="http://localhost:9000")
    assert (provider.timeout_seconds, provider.connect_timeout_seconds, provider.first_byte_timeout_seconds) == (
        600.0,
        5.0,
        60.0,
    )
    assert (provider.headers, provider.api_key, provider.api_key_env) == ({}, "", "")
    assert ProviderConfig(name="e", kind="echo").base_url == ""


def test_the_api_key_is_never_printed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + UPSTREAM), {"OAI_KEY": SECRET})
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in repr(config.provider("oai"))
    assert "OAI_KEY" in repr(config.provider("oai"))


def test_a_missing_key_variable_for_a_used_provider(tmp_path: Path) -> None:
    message = "provider oai: the environment variable OAI_KEY (its api_key_env) is not set"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, BASE + UPSTREAM), {})
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, BASE + UPSTREAM), {"OAI_KEY": ""})


def test_a_missing_key_variable_for_an_unused_provider_is_fine(tmp_path: Path) -> None:
    text = BASE + UPSTREAM.split("[[models]]")[0]
    config = load_config(write(tmp_path, text), {})
    assert config.provider("oai").api_key == ""


@pytest.mark.parametrize("base_url", [None, "", "api.example.com", "ftp://api.example.com", "HTTPS//x"])
def test_an_http_provider_needs_an_http_base_url(tmp_path: Path, base_url: str | None) -> None:
    line = "" if base_url is None else f'base_url = "{base_url}"\n'
    text = f'[[providers]]\nname = "up"\nkind = "gemini"\n{line}'
    with pytest.raises(ConfigError, match=re.escape("provider up: base_url must be an http:// or https:// URL")):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize("name", ["timeout_seconds", "connect_timeout_seconds", "first_byte_timeout_seconds"])
@pytest.mark.parametrize("value", [0, -1])
def test_provider_timeouts_must_be_positive(tmp_path: Path, name: str, value: int) -> None:
    text = f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "http://x"\n{name} = {value}\n'
    with pytest.raises(ConfigError, match=re.escape(f"provider up: {name} must be positive")):
        load_config(write(tmp_path, text), {})


@pytest.mark.parametrize("headers", ['{ "X-A" = 1 }', '"X-A: b"', '["X-A"]'])
def test_provider_headers_must_be_strings(tmp_path: Path, headers: str) -> None:
    text = f'[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "http://x"\nheaders = {headers}\n'
    with pytest.raises(ConfigError, match=re.escape("provider up: headers must be a table of strings")):
        load_config(write(tmp_path, text), {})


def test_provider_needs_a_name() -> None:
    with pytest.raises(ConfigError, match=re.escape("every [[providers]] entry needs a name")):
        ProviderConfig(name="", kind="echo")


# --- models ---------------------------------------------------------------------

MODELS = """
[[models]]
id = "big"
provider = "echo"
fallbacks = ["small", "echo-1"]
system_prompt = "Be kind."
context_length = 8192

[[models]]
id = "small"
provider = "echo"
"""


def test_model_fallbacks_system_prompt_and_context_length(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MODELS), {})
    big, small = config.models[1:]
    assert (big.fallbacks, big.system_prompt, big.context_length) == (("small", "echo-1"), "Be kind.", 8192)
    assert (small.fallbacks, small.system_prompt, small.context_length) == ((), "", None)


def test_a_fallback_must_be_a_model_or_an_alias(tmp_path: Path) -> None:
    text = BASE + 'fallbacks = ["nope"]\n'
    with pytest.raises(ConfigError, match=re.escape("model echo-1: fallback 'nope' is neither a model nor an alias")):
        load_config(write(tmp_path, text), {})
    text = BASE + 'fallbacks = ["fast"]\n[aliases]\nfast = ["echo-1"]\n'
    assert load_config(write(tmp_path, text), {}).models[0].fallbacks == ("fast",)


@pytest.mark.parametrize("fallbacks", ['"small"', "[1]"])
def test_fallbacks_must_be_a_list_of_ids(tmp_path: Path, fallbacks: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("model echo-1: fallbacks must be a list of model ids")):
        load_config(write(tmp_path, BASE + f"fallbacks = {fallbacks}\n"), {})


@pytest.mark.parametrize("value", [0, -5])
def test_context_length_must_be_positive(tmp_path: Path, value: int) -> None:
    with pytest.raises(ConfigError, match=re.escape("model echo-1: context_length must be positive")):
        load_config(write(tmp_path, BASE + f"context_length = {value}\n"), {})


@pytest.mark.parametrize("name", ["input_credits_per_1k", "output_credits_per_1k", "credits_per_call"])
def test_prices_must_not_be_negative(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"model echo-1: {name} must not be negative")):
        load_config(write(tmp_path, BASE + f"{name} = -0.1\n"), {})


def test_model_cost_in_micro_credits() -> None:
    model = ModelConfig("m", "echo", input_credits_per_1k=0.5, output_credits_per_1k=1.5, credits_per_call=0.001)
    assert model.cost(1000, 1000) == 2_000_000 + 1000
    assert model.cost(1, 0) == 500 + 1000  # 0.5 credits per 1k: 500 micro-credits a token, plus the call
    # A fraction of a micro-credit is rounded up.
    assert ModelConfig("m", "echo", input_credits_per_1k=0.0015).cost(1, 0) == 2
    assert ModelConfig("free", "echo").cost(10**6, 10**6) == 0


# --- aliases --------------------------------------------------------------------


def test_aliases(tmp_path: Path) -> None:
    text = BASE + MODELS + '[aliases]\nfast = ["small", "echo-1"]\ngood = ["big", "fast"]\n'
    config = load_config(write(tmp_path, text), {})
    assert config.aliases == {"fast": ("small", "echo-1"), "good": ("big", "fast")}
    assert load_config(write(tmp_path, BASE), {}).aliases == {}


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ('fast = ["nope"]', "aliases.fast: 'nope' is neither a model nor an alias"),
        ('echo-1 = ["small"]', "aliases.echo-1: a model already has that id"),
        ("fast = []", "aliases.fast: needs at least one model"),
        ('a = ["b"]\nb = ["a"]', "aliases form a cycle: a -> b -> a"),
        ('a = ["a"]', "aliases form a cycle: a -> a"),
        ('a = ["small", "b"]\nb = ["c"]\nc = ["echo-1", "a"]', "aliases form a cycle: a -> b -> c -> a"),
    ],
)
def test_invalid_aliases(tmp_path: Path, aliases: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, BASE + MODELS + "[aliases]\n" + aliases + "\n"), {})


@pytest.mark.parametrize("aliases", ['fast = "small"', "fast = [1]", 'fast = { a = "b" }'])
def test_aliases_map_names_to_lists_of_ids(tmp_path: Path, aliases: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("[aliases] maps each alias to a list of model ids")):
        load_config(write(tmp_path, BASE + MODELS + "[aliases]\n" + aliases + "\n"), {})


# --- routing --------------------------------------------------------------------


def test_routing_defaults(tmp_path: Path) -> None:
    routing = load_config(write(tmp_path, BASE), {}).routing
    assert routing == RoutingConfig()
    assert (routing.retries, routing.backoff_seconds, routing.max_backoff_seconds) == (1, 0.25, 8.0)
    assert (routing.deadline_seconds, routing.breaker_failures, routing.breaker_cooldown_seconds) == (900.0, 5, 30.0)


def test_routing_section(tmp_path: Path) -> None:
    text = (
        "[routing]\nretries = 0\nbackoff_seconds = 0.5\nmax_backoff_seconds = 2\ndeadline_seconds = 60\n"
        "breaker_failures = 3\nbreaker_cooldown_seconds = 10\n" + BASE
    )
    assert load_config(write(tmp_path, text), {}).routing == RoutingConfig(0, 0.5, 2, 60, 3, 10)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("retries = -1", "routing.retries must be >= 0 and routing.breaker_failures >= 1"),
        ("breaker_failures = 0", "routing.retries must be >= 0 and routing.breaker_failures >= 1"),
        ("backoff_seconds = -0.1", "routing.backoff_seconds must not be negative"),
        ("max_backoff_seconds = -1", "routing.max_backoff_seconds must not be negative"),
        ("deadline_seconds = -1", "routing.deadline_seconds must not be negative"),
        ("breaker_cooldown_seconds = -1", "routing.breaker_cooldown_seconds must not be negative"),
    ],
)
def test_invalid_routing(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, f"[routing]\n{line}\n" + BASE), {})


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape('modelway.toml: there is no section "servers" (did you mean "server"?)')
    ):
        load_config(write(tmp_path, "[servers]\n" + BASE), {})


def test_config_built_directly_is_validated_too() -> None:
    echo = ProviderConfig("echo", "echo")
    with pytest.raises(ConfigError, match=re.escape("aliases.x: 'y' is neither a model nor an alias")):
        Config(providers=(echo,), models=(ModelConfig("m", "echo"),), aliases={"x": ("y",)})


@pytest.mark.parametrize("field", ["usage_flush_seconds", "checkpoint_seconds", "refresh_seconds"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_store_intervals_must_be_positive_seconds(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"store.{field} must be a number of seconds above 0"):
        load_config(write(tmp_path, BASE + f"\n[store]\n{field} = {value}\n"), {})


def test_model_type_is_chat_image_or_embedding(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE + 'type = "image"\ncredits_per_image = 2\n'), {}).models[0].image_cost(
        3
    ) == (6_000_000)
    with pytest.raises(
        ConfigError, match=re.escape("model echo-1: type must be one of chat, image, embedding, got 'video'")
    ):
        load_config(write(tmp_path, BASE + 'type = "video"\n'), {})
