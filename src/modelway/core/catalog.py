"""The model catalog: resolves what a caller names to a configured model."""

from __future__ import annotations

from collections.abc import Iterable

from modelway.config import ModelConfig
from modelway.errors import GatewayError, Reason, clip

__all__ = ["Catalog"]


class Catalog:
    def __init__(self, models: Iterable[ModelConfig]) -> None:
        self._models = {model.id: model for model in models}

    def all(self) -> tuple[ModelConfig, ...]:
        return tuple(self._models.values())

    def has(self, name: str) -> bool:
        return name in self._models

    def resolve(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise self.not_found(name)
        return model

    @staticmethod
    def not_found(name: str) -> GatewayError:
        return GatewayError(
            Reason.MODEL_NOT_FOUND,
            f"The model `{clip(name)}` does not exist or you do not have access to it.",
            param="model",
        )
