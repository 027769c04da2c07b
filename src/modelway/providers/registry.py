"""Builds provider adapters from configuration: the one place that dispatches on kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from modelway.config import ConfigError, ProviderConfig
from modelway.providers.anthropic import AnthropicTranslator
from modelway.providers.base import ChatProvider, ImageProvider, ImageTranslatorFactory, TranslatorFactory
from modelway.providers.echo import EchoProvider
from modelway.providers.gemini import GeminiTranslator
from modelway.providers.http import HttpProvider, Transport
from modelway.providers.openai import OpenAITranslator
from modelway.providers.openai_images import OpenAIImageTranslator

__all__ = ["IMAGE_KINDS", "KINDS", "ProviderRegistry"]

# Wire formats spoken over HTTP; "echo" is built in and needs no network.
_TRANSLATORS: Mapping[str, TranslatorFactory] = MappingProxyType(
    {
        "openai": OpenAITranslator,
        "anthropic": AnthropicTranslator,
        "gemini": GeminiTranslator,
    }
)
# The kinds whose upstreams also generate images, in the OpenAI Images API.
_IMAGE_TRANSLATORS: Mapping[str, ImageTranslatorFactory] = MappingProxyType({"openai": OpenAIImageTranslator})
KINDS = ("echo", *sorted(_TRANSLATORS))
# The kinds that can serve `type = "image"` models (the configuration refuses any other).
IMAGE_KINDS = ("echo", *sorted(_IMAGE_TRANSLATORS))


def check_kinds(configs: Iterable[ProviderConfig]) -> None:
    """Refuses an unknown kind when the configuration loads, not on the first call."""
    for config in configs:
        if config.kind not in KINDS:
            raise ConfigError(f"provider {config.name}: unknown kind {config.kind!r} (known: {', '.join(KINDS)})")


class ProviderRegistry:
    def __init__(self, configs: Iterable[ProviderConfig], transport: Transport) -> None:
        configs = tuple(configs)
        check_kinds(configs)
        providers: dict[str, ChatProvider] = {}
        image_providers: dict[str, ImageProvider] = {}
        for config in configs:
            if config.kind == "echo":
                echo = EchoProvider(token_delay=config.token_delay_ms / 1000)
                providers[config.name] = image_providers[config.name] = echo
            else:
                images = _IMAGE_TRANSLATORS.get(config.kind)
                http = HttpProvider(config, _TRANSLATORS[config.kind], transport, images=images)
                providers[config.name] = http
                if images is not None:
                    image_providers[config.name] = http
        self._providers = providers
        self._image_providers = image_providers

    def get(self, name: str) -> ChatProvider:
        return self._providers[name]

    def images(self, name: str) -> ImageProvider | None:
        """The provider as an image generator; None when its wire format has no images API."""
        return self._image_providers.get(name)
