"""The model catalog: resolves what a caller names to a configured model, and its public listing.

resolve(id)            the model a chat or image call names (404 MODEL_NOT_FOUND)
find(id_or_slug)       GET /api/models/{id_or_slug}: a numeric catalog id or a slug
search(...)            GET /api/models?q&category&type&page: filtered, PAGE_SIZE a page
categories()           GET /api/categories: the categories some model is in
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelway.config import ModelConfig
from modelway.errors import GatewayError, Reason, clip

__all__ = ["PAGE_SIZE", "Catalog", "CatalogPage", "Category", "Page"]

# Items per page of every public list (the catalog, conversations).
PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Page:
    """Where a page sits in a list: its number (from 1), its size, and the whole list's length."""

    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return -(-self.total // self.size)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass(frozen=True, slots=True)
class CatalogPage:
    models: tuple[ModelConfig, ...]
    page: Page


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    model_count: int


class Catalog:
    def __init__(self, models: Iterable[ModelConfig]) -> None:
        self._models = {model.id: model for model in models}
        self._by_number = {model.number: model for model in self._models.values()}
        self._by_slug = {model.slug: model for model in self._models.values()}

    def all(self) -> tuple[ModelConfig, ...]:
        return tuple(self._models.values())

    def has(self, name: str) -> bool:
        return name in self._models

    def resolve(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise self.not_found(name)
        return model

    def find(self, ref: str) -> ModelConfig | None:
        """A model by its numeric catalog id ("7") or its slug; None when there is none."""
        if ref.isascii() and ref.isdigit():
            # No catalog id has more digits than a 64-bit one; int() would refuse thousands of them (a 500).
            return self._by_number.get(int(ref)) if len(ref) <= 19 else None
        return self._by_slug.get(ref)

    def search(self, query: str = "", category: str = "", kind: str = "", page: int = 1) -> CatalogPage:
        """Models whose name, slug or description holds `query` (any case), in `category` and of type
        `kind` when given, ordered by numeric id; one page of them."""
        words = query.casefold().strip()
        matching = tuple(
            model
            for model in sorted(self._models.values(), key=lambda m: m.number)
            if (not words or words in f"{model.name}\n{model.slug}\n{model.description}".casefold())
            and (not category or model.category.casefold() == category.casefold())
            and (not kind or model.type == kind)
        )
        where = Page(page, PAGE_SIZE, len(matching))
        return CatalogPage(matching[where.offset : where.offset + PAGE_SIZE], where)

    def categories(self) -> tuple[Category, ...]:
        """Every category some model is in (an empty category is none), by name."""
        counts: dict[str, int] = {}
        for model in self._models.values():
            if model.category:
                counts[model.category] = counts.get(model.category, 0) + 1
        return tuple(Category(name, count) for name, count in sorted(counts.items()))

    @staticmethod
    def not_found(name: str) -> GatewayError:
        return GatewayError(
            Reason.MODEL_NOT_FOUND,
            f"The model `{clip(name)}` does not exist or you do not have access to it.",
            param="model",
        )
