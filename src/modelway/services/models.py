"""ModelsService: the catalog in the OpenAI Models API shape."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import grpc

from modelway.config import ModelConfig
from modelway.core.access import Gate
from modelway.core.catalog import Catalog
from modelway.core.directory import Caller
from modelway.services._rpc import RpcCall, unary
from modelway.surfaces.grpc import key_wording
from modelway.surfaces.openai import OPENAI
from modelway.v1 import models_pb2, models_pb2_grpc

__all__ = ["ModelsServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _model_proto(model: ModelConfig) -> models_pb2.Model:
    return models_pb2.Model(id=model.id, object="model", created=model.created, owned_by=model.owned_by)


def visible_to(caller: Caller, model: ModelConfig) -> bool:
    """A key limited to some models lists only those."""
    return not caller.key.allowed_models or model.id in caller.key.allowed_models


class ModelsServicer(models_pb2_grpc.ModelsServiceServicer):
    def __init__(self, catalog: Catalog, gate: Gate) -> None:
        self._catalog = catalog
        self._gate = gate

    @unary(OPENAI.error_response)
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context, call: RpcCall
    ) -> models_pb2.ListModelsResponse:
        caller = await self._gate.authorize(call.metadata, "models.list", key_wording(call.from_rest))
        return models_pb2.ListModelsResponse(
            object="list", data=[_model_proto(m) for m in self._catalog.all() if visible_to(caller, m)]
        )

    @unary(OPENAI.error_response)
    async def GetModel(self, request: models_pb2.GetModelRequest, context: Context, call: RpcCall) -> models_pb2.Model:
        caller = await self._gate.authorize(call.metadata, "models.list", key_wording(call.from_rest))
        # Envoy binds path parameters with their percent-escapes kept: `ft%3Agpt-4o-mini%3A...`,
        # `meta-llama%2FLlama-3.1-8B`. A native caller's name is taken as it is.
        name = unquote(request.model) if call.from_rest else request.model
        model = self._catalog.resolve(name)
        if not visible_to(caller, model):
            raise self._catalog.not_found(name)
        return _model_proto(model)
