"""The provider example in the README is a configuration that loads and wires up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelway.config import ConfigError, load_config
from modelway.providers.http import Transport
from modelway.providers.registry import ProviderRegistry

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-k"}


def readme_example(tmp_path: Path) -> Path:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Upstream providers and routing") :]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    path = tmp_path / "example.toml"
    path.write_text(block.group(1))
    return path


def test_readme_example_loads_every_kind(tmp_path: Path) -> None:
    config = load_config(readme_example(tmp_path), SECRETS)
    assert {p.kind for p in config.providers} == {"openai", "anthropic", "gemini"}
    assert config.aliases["auto"] == ("fast", "smart", "reason")
    assert config.provider("anthropic").api_key == "sk-a"
    assert "sk-a" not in repr(config)
    ProviderRegistry(config.providers, Transport())


def test_readme_example_without_a_secret_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        load_config(readme_example(tmp_path), {k: v for k, v in SECRETS.items() if k != "GEMINI_API_KEY"})
