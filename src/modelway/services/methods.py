"""Every served method in one table, given to grpc.aio as its one generic handler.

The generated `add_*Servicer_to_server` functions also register each method
with grpc.aio as a "registered method". For those, grpc.aio's accept loop
keeps one pending request per method and, for every call that arrives,
waits on all of them at once (an `asyncio.wait` adding and removing a
callback on each): with this gateway's 47 methods that wait cost 34 us of
CPU per call against 10 us for two (about 2% of a chat call's CPU, with
the interceptor below). Served from this table instead, every call
arrives through grpc.aio's one generic request and is matched by one dict
lookup, to a handler guarded against undecodable requests (services/_rpc.py
`guard`) once, when it was added, not on each call by an interceptor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import grpc

from modelway.services._rpc import guard

__all__ = ["MethodTable"]

if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Generic = grpc.GenericRpcHandler[Any, Any]
else:  # not subscriptable at run time
    _Handler = grpc.RpcMethodHandler
    _Generic = grpc.GenericRpcHandler


class MethodTable(_Generic):
    """Stands in for the server while the services are added (it keeps what the generated code
    registers), then is installed on the real server as its one handler."""

    def __init__(self) -> None:
        # "/package.Service/Method" -> its guarded handler.
        self._methods: dict[str, _Handler] = {}
        self._services: set[str] = set()  # the services registered by name
        self._generic_services: set[str] = set()  # the services registered as generic handlers

    def as_server(self) -> grpc.aio.Server:
        """This table, for the generated `add_*Servicer_to_server(servicer, server)` functions, which
        call only `add_generic_rpc_handlers` and `add_registered_method_handlers` on their server."""
        return cast(grpc.aio.Server, self)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, _Handler]) -> None:
        self._services.add(service)
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods[method] = guard(handler, method)

    def add_generic_rpc_handlers(self, handlers: Iterable[_Generic]) -> None:
        """Not kept: generated code (grpcio-tools 1.62 and later) adds every service both ways, and its
        methods are kept by name. A service added only this way is refused by `install`, not lost."""
        for handler in handlers:
            if not isinstance(handler, grpc.ServiceRpcHandler):
                raise TypeError(f"cannot serve {handler!r}: only services with named methods are kept")
            self._generic_services.add(handler.service_name())

    def install(self, server: grpc.aio.Server) -> None:
        """Serves every method added so far from `server` (which must not be started yet)."""
        unnamed = self._generic_services - self._services
        if unnamed:
            raise TypeError(f"services added without their methods by name: {', '.join(sorted(unnamed))}")
        server.add_generic_rpc_handlers((self,))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler | None:
        return self._methods.get(handler_call_details.method)
