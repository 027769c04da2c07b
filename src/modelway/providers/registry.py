"""Builds provider adapters from configuration: the one place that dispatches on kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from modelway.config import ConfigError, ProviderConfig
from modelway.providers.base import ChatProvider
from modelway.providers.echo import EchoProvider

__all__ = ["ProviderRegistry"]


def _echo(config: ProviderConfig) -> ChatProvider:
    return EchoProvider(token_delay=config.token_delay_ms / 1000)


_FACTORIES: Mapping[str, Callable[[ProviderConfig], ChatProvider]] = MappingProxyType(
    {
        "echo": _echo,
    }
)


class ProviderRegistry:
    def __init__(self, configs: Iterable[ProviderConfig]) -> None:
        providers: dict[str, ChatProvider] = {}
        for config in configs:
            factory = _FACTORIES.get(config.kind)
            if factory is None:
                known = ", ".join(sorted(_FACTORIES))
                raise ConfigError(f"provider {config.name}: unknown kind {config.kind!r} (known: {known})")
            providers[config.name] = factory(config)
        self._providers = providers

    def get(self, name: str) -> ChatProvider:
        return self._providers[name]
