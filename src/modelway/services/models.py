"""ModelsService: the catalog in the OpenAI Models API shape."""

from __future__ import annotations

from typing import Any

import grpc

from modelway.config import ModelConfig
from modelway.core.auth import bearer_secret
from modelway.core.catalog import Catalog
from modelway.core.keys import KeyRing
from modelway.services._rpc import RpcCall, unary
from modelway.surfaces import openai
from modelway.v1 import models_pb2, models_pb2_grpc

__all__ = ["ModelsServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _model_proto(model: ModelConfig) -> models_pb2.Model:
    return models_pb2.Model(id=model.id, object="model", created=model.created, owned_by=model.owned_by)


class ModelsServicer(models_pb2_grpc.ModelsServiceServicer):
    def __init__(self, catalog: Catalog, keys: KeyRing) -> None:
        self._catalog = catalog
        self._keys = keys

    @unary(openai.error_json)
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context, call: RpcCall
    ) -> models_pb2.ListModelsResponse:
        await self._keys.authenticate(bearer_secret(call.metadata))
        return models_pb2.ListModelsResponse(object="list", data=[_model_proto(m) for m in self._catalog.all()])

    @unary(openai.error_json)
    async def GetModel(self, request: models_pb2.GetModelRequest, context: Context, call: RpcCall) -> models_pb2.Model:
        await self._keys.authenticate(bearer_secret(call.metadata))
        return _model_proto(self._catalog.resolve(request.model))
