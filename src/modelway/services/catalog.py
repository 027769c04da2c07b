"""CatalogRestService (GET /api/models, /api/models/{id_or_slug}, /api/categories) and CatalogService,
its typed gRPC twin: the public catalog, no key needed."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import grpc
from google.api import httpbody_pb2

from modelway.config import ModelConfig
from modelway.core.catalog import Catalog, Page
from modelway.services._rpc import RpcCall, unary
from modelway.surfaces.catalog import (
    CHAT_SEND,
    categories_json,
    envelope,
    model_json,
    page_json,
    page_of,
    query_of,
    type_of,
    unknown_model,
)
from modelway.v1 import catalog_pb2, catalog_pb2_grpc
from modelway.v1.rest import catalog_pb2 as catalog_rest_pb2
from modelway.v1.rest import catalog_pb2_grpc as catalog_rest_pb2_grpc

__all__ = ["CatalogRestServicer", "CatalogServicer", "page_proto"]

Context = grpc.aio.ServicerContext[Any, Any]
_JSON = "application/json"


def _body(data: Any) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=_JSON, data=envelope(data))


def _find(catalog: Catalog, ref: str) -> ModelConfig:
    model = catalog.find(ref)
    if model is None:
        raise unknown_model()
    return model


class CatalogRestServicer(catalog_rest_pb2_grpc.CatalogRestServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @unary(CHAT_SEND.error_response)
    async def ListModels(
        self, request: catalog_rest_pb2.ListModelsQuery, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        found = self._catalog.search(
            query_of(request.q), request.category, type_of(request.type), page_of(request.page)
        )
        return _body({"models": [model_json(m) for m in found.models], "pagination": page_json(found.page)})

    @unary(CHAT_SEND.error_response)
    async def GetModel(
        self, request: catalog_rest_pb2.GetModelQuery, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        # Envoy keeps a path parameter's percent-escapes (a slug "org%2Fmodel").
        return _body(model_json(_find(self._catalog, unquote(request.model))))

    @unary(CHAT_SEND.error_response)
    async def ListCategories(
        self, request: catalog_rest_pb2.ListCategoriesQuery, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        return _body(categories_json(self._catalog.categories()))


def page_proto(page: Page) -> catalog_pb2.PageInfo:
    return catalog_pb2.PageInfo(page=page.number, per_page=page.size, total=page.total, total_pages=page.pages)


def _model_proto(model: ModelConfig) -> catalog_pb2.CatalogModel:
    pricing = (
        None
        if model.private_prices
        else catalog_pb2.CatalogPricing(
            input_per_1k_tokens=model.input_credits_per_1k,
            output_per_1k_tokens=model.output_credits_per_1k,
            per_request=model.credits_per_call,
            per_image=model.credits_per_image,
        )
    )
    return catalog_pb2.CatalogModel(
        id=model.number,
        slug=model.slug,
        name=model.name,
        description=model.description,
        category=model.category,
        type=model.type,
        capabilities=model.capabilities,
        context_length=model.context_length,
        max_output_tokens=model.max_output_tokens,
        pricing=pricing,
        created=model.created,
        owned_by=model.owned_by,
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @unary(CHAT_SEND.error_response)
    async def ListCatalogModels(
        self, request: catalog_pb2.ListCatalogModelsRequest, context: Context, call: RpcCall
    ) -> catalog_pb2.ListCatalogModelsResponse:
        found = self._catalog.search(
            query_of(request.query), request.category, type_of(request.type), page_of(str(request.page or 1))
        )
        return catalog_pb2.ListCatalogModelsResponse(
            models=[_model_proto(m) for m in found.models], page=page_proto(found.page)
        )

    @unary(CHAT_SEND.error_response)
    async def GetCatalogModel(
        self, request: catalog_pb2.GetCatalogModelRequest, context: Context, call: RpcCall
    ) -> catalog_pb2.GetCatalogModelResponse:
        return catalog_pb2.GetCatalogModelResponse(model=_model_proto(_find(self._catalog, request.model)))

    @unary(CHAT_SEND.error_response)
    async def ListCategories(
        self, request: catalog_pb2.ListCategoriesRequest, context: Context, call: RpcCall
    ) -> catalog_pb2.ListCategoriesResponse:
        return catalog_pb2.ListCategoriesResponse(
            categories=[
                catalog_pb2.Category(name=c.name, model_count=c.model_count) for c in self._catalog.categories()
            ]
        )
