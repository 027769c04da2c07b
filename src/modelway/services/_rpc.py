"""The one place where a GatewayError becomes a gRPC status, an HTTP status and a body.

Every servicer method is wrapped by `unary` or `stream`. The wrapper gives it
an RpcCall (request id, metadata, response headers) and, when a GatewayError
escapes before the first message, aborts with:
  - the gRPC status code and message, plus a google.rpc.Status carrying an
    ErrorInfo (grpc-status-details-bin, reason = the Reason's name);
  - for REST callers only (Envoy's transcoder marks them with
    x-envoy-original-path), trailing metadata `x-http-status` and
    `x-error-json`, which the Lua filter in front of the transcoder turns into
    the exact HTTP status and body. Native callers never see them.
Errors must abort before any initial metadata is sent: only then is the
response trailers-only, and only then does Envoy show trailers as headers.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from modelway.errors import GatewayError, Reason, as_gateway_error

__all__ = ["ErrorRenderer", "RpcCall", "stream", "unary"]

# Read by the OpenAI and Anthropic SDKs before their own retry rules: these do not pass by retrying.
_NOT_RETRYABLE = frozenset({Reason.BUDGET_EXCEEDED, Reason.INSUFFICIENT_CREDITS})

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")
# A REST dialect's rendering of an error: the HTTP status and the body.
ErrorRenderer = Callable[[GatewayError], tuple[int, bytes]]


class RpcCall:
    """What a servicer method knows about its call beyond the request."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.metadata: dict[str, str] = {
            key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
        }
        # Envoy forwards its x-request-id; a direct gRPC caller gets a new one.
        self.request_id = self.metadata.get("x-request-id") or uuid.uuid4().hex
        # Headers for the response (initial metadata on success, trailers on error).
        self.headers: list[tuple[str, str]] = [("x-request-id", self.request_id)]

    def header(self, name: str) -> str:
        return self.metadata.get(name, "")

    @property
    def from_rest(self) -> bool:
        """Whether Envoy's transcoder made this call from a REST request."""
        return "x-envoy-original-path" in self.metadata


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], call: RpcCall, error: GatewayError, render: ErrorRenderer
) -> None:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason.name, domain="modelway", metadata={"param": error.param or ""}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message, details=[detail])
    trailers: list[tuple[str, str | bytes]] = [
        *call.headers,
        *error.headers,
        ("grpc-status-details-bin", status.SerializeToString()),
    ]
    retry_after = error.retry_after_header
    if retry_after is not None:
        trailers.append(("retry-after", retry_after))
    if call.from_rest:
        http_status, body = render(error)
        if not body.isascii():
            # Metadata values must be ASCII; \u escapes keep the JSON the same.
            body = json.dumps(json.loads(body), separators=(",", ":")).encode()
        trailers += [("x-http-status", str(http_status)), ("x-error-json", body.decode())]
        if error.reason in _NOT_RETRYABLE:
            trailers.append(("x-should-retry", "false"))
    await context.abort(error.grpc_code, error.message, trailing_metadata=tuple(trailers))


def unary(
    render: ErrorRenderer,
) -> Callable[
    [Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp], RpcCall], Awaitable[Resp]]], Callable[..., Awaitable[Resp]]
]:
    def wrap(
        method: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp], RpcCall], Awaitable[Resp]],
    ) -> Callable[..., Awaitable[Resp]]:
        @functools.wraps(method)
        async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            call = RpcCall(context)
            try:
                response = await method(self, request, context, call)
            except Exception as exc:
                await _abort(context, call, as_gateway_error(exc), render)
                raise  # unreachable: abort raises
            await context.send_initial_metadata(tuple(call.headers))
            return response

        return wrapper

    return wrap


def stream(
    render: ErrorRenderer,
) -> Callable[
    [Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp], RpcCall], AsyncIterator[Resp]]],
    Callable[..., AsyncIterator[Resp]],
]:
    def wrap(
        method: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp], RpcCall], AsyncIterator[Resp]],
    ) -> Callable[..., AsyncIterator[Resp]]:
        @functools.wraps(method)
        async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> AsyncIterator[Resp]:
            call = RpcCall(context)
            started = False
            try:
                async for message in method(self, request, context, call):
                    if not started:
                        started = True
                        await context.send_initial_metadata(tuple(call.headers))
                    yield message
            except Exception as exc:
                error = as_gateway_error(exc)
                if started:
                    # Trailers after messages: a native caller still gets the status.
                    await context.abort(error.grpc_code, error.message)
                await _abort(context, call, error, render)

        return wrapper

    return wrap
