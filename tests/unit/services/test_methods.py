from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from modelway.services._rpc import Undecodable
from modelway.services.methods import MethodTable
from modelway.v1 import models_pb2
from modelway.v1.models_pb2_grpc import ModelsServiceServicer, add_ModelsServiceServicer_to_server


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _table() -> MethodTable:
    table = MethodTable()
    add_ModelsServiceServicer_to_server(ModelsServiceServicer(), table.as_server())
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), table.as_server())
    return table


def test_a_generated_service_is_served_by_name_with_a_deserializer_that_never_raises() -> None:
    handler: Any = _table().service(_Details("/modelway.v1.ModelsService/ListModels"))
    assert handler is not None
    assert handler.request_deserializer(models_pb2.ListModelsRequest().SerializeToString()) == (
        models_pb2.ListModelsRequest()
    )
    refused = handler.request_deserializer(b"\xff\xff\xff\xff")
    assert refused == Undecodable("modelway.v1.ListModelsRequest", 4)


def test_grpcios_own_services_are_served_too() -> None:
    assert _table().service(_Details("/grpc.health.v1.Health/Check")) is not None


@pytest.mark.parametrize("method", ["/modelway.v1.ModelsService/Nope", "/modelway.v1.Nope/ListModels", "", "/"])
def test_a_method_nobody_added_is_not_served(method: str) -> None:
    assert _table().service(_Details(method)) is None


def test_a_service_added_only_as_a_generic_handler_is_refused_at_install_not_lost() -> None:
    table = _table()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    table.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("old.Service", {"Call": handler}),))

    async def install() -> None:
        table.install(grpc.aio.server())  # a grpc.aio server is made inside a running loop

    with pytest.raises(TypeError, match=r"old\.Service"):
        asyncio.run(install())


def test_a_handler_without_named_methods_is_refused() -> None:
    class Opaque(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, handler_call_details: grpc.HandlerCallDetails) -> None:
            return None

    with pytest.raises(TypeError, match="only services with named methods"):
        MethodTable().add_generic_rpc_handlers((Opaque(),))
