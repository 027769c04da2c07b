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

A request message that does not decode (random bytes, invalid UTF-8 in a
string, nesting past protobuf's depth limit of 100) must not reach grpcio's
own error path, which answers UNKNOWN with the Python exception's text.
`guard` gives every method a deserializer that never raises (the method
table applies it once per method, services/methods.py): it returns an
`Undecodable`, and the wrappers answer INVALID_ARGUMENT (400) in the API's
words (for grpcio's own health and reflection servicers, the guard answers
it before their code runs).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from modelway.errors import GatewayError, Reason, as_gateway_error

__all__ = ["ErrorRenderer", "RpcCall", "Undecodable", "client_request_id", "guard", "stream", "unary"]

# Our own services' wrappers answer Undecodable requests themselves; others are refused for them.
_GUARDED_PREFIX = "/modelway."
_METADATA_SAFE = re.compile(r"[\x20-\x7e]*")
# What the usage row keeps of a caller's own request id.
_CLIENT_ID_CHARS = 128

# Read by the OpenAI and Anthropic SDKs before their own retry rules: these do not pass by retrying.
_NOT_RETRYABLE = frozenset({Reason.BUDGET_EXCEEDED, Reason.INSUFFICIENT_CREDITS})

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")
# A REST dialect's rendering of an error: the HTTP status and the body.
ErrorRenderer = Callable[[GatewayError], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What a guarded deserializer returns for bytes that are not a `message`."""

    message: str  # the full name of the expected request message
    size: int


def _guarded(deserializer: Callable[[bytes], Any], message: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, and anything else a decoder may raise on hostile bytes
            return Undecodable(message, len(data))

    return deserialize


def _request_name(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> str:
    deserializer = handler.request_deserializer
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "")) or f"the request of {method}"


def guard(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` (of the method named `method`, "/package.Service/Method") with a deserializer that never
    raises; grpcio's own servicers (health, reflection) also refuse what it could not decode. (Their
    kinds are covered: unary-unary, unary-stream, stream-stream; none of them is stream-unary.)"""
    if handler.request_deserializer is None:
        return handler
    name = _request_name(handler, method)
    guarded = handler._replace(request_deserializer=_guarded(handler.request_deserializer, name))  # type: ignore[attr-defined]
    if not method.startswith(_GUARDED_PREFIX):
        # Health and reflection are grpcio's own servicers: an undecodable request stops at their door.
        guarded = _refusing_undecodable(guarded)
    return guarded  # type: ignore[no-any-return]


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], request: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _undecodable_error(request, from_rest=False).message)


def _refusing_undecodable(handler: Any) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its behaviour refusing Undecodable requests; grpcio servicers are coroutines or
    async generators, taking one request or an iterator of them."""
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            return await behaviour(request, context)

        return handler._replace(unary_unary=unary_unary)  # type: ignore[no-any-return]
    if handler.unary_stream is not None and not inspect.isasyncgenfunction(handler.unary_stream):
        behaviour = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            return await behaviour(request, context)

        return handler._replace(unary_stream=unary_stream)  # type: ignore[no-any-return]
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        behaviour = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    yield request

            async for response in behaviour(checked(), context):
                yield response

        return handler._replace(stream_stream=stream_stream)  # type: ignore[no-any-return]
    return handler  # type: ignore[no-any-return]


def client_request_id(metadata: dict[str, str]) -> str:
    """The caller's own id for the call, kept beside ours: printable ASCII, clipped.

    x-client-request-id (Envoy moves a REST or gRPC caller's X-Request-Id
    there); on a direct native call, the caller's x-request-id. A call that
    came through Envoy (which always adds x-forwarded-proto) carries Envoy's
    own x-request-id, which is not the caller's.
    """
    raw = metadata.get("x-client-request-id")
    if raw is None and "x-forwarded-proto" not in metadata:
        raw = metadata.get("x-request-id")
    raw = raw or ""
    return "".join(char for char in raw if " " <= char <= "~")[:_CLIENT_ID_CHARS]


def _undecodable_error(request: Undecodable, from_rest: bool) -> GatewayError:
    if from_rest:
        # Envoy built the message from the path, query and body: what failed is a value in them.
        return GatewayError(
            Reason.INVALID_BODY,
            "The request could not be read: a path or query parameter, or a field of the body, is not valid "
            "UTF-8 text or is nested too deeply.",
        )
    return GatewayError(
        Reason.INVALID_BODY,
        f"The request message could not be decoded as {request.message} ({request.size} bytes): it is not that "
        "message, a string field holds invalid UTF-8, or it is nested deeper than 100 levels.",
    )


class RpcCall:
    """What a servicer method knows about its call beyond the request."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], size: int = 0) -> None:
        self.context = context
        self.metadata: dict[str, str] = {
            key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
        }
        # Always ours and unique: a caller's id (which any caller can repeat) is kept apart.
        self.request_id = "req_" + secrets.token_hex(12)
        self.client_request_id = client_request_id(self.metadata)
        # The request message's encoded size: large ones are parsed off the event loop.
        self.size = size
        # Headers for the response (initial metadata on success, trailers on error).
        self.headers: list[tuple[str, str]] = [("x-request-id", self.request_id)]

    def header(self, name: str) -> str:
        return self.metadata.get(name, "")

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline; None when it set none."""
        remaining: float | None = self.context.time_remaining()
        return remaining

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
        text = body.decode()
        if not _METADATA_SAFE.fullmatch(text):
            # Metadata values must be printable ASCII (gRPC refuses the whole call otherwise, DEL
            # included); \u escapes keep the JSON the same.
            text = json.dumps(json.loads(body), separators=(",", ":")).replace("\x7f", "\\u007f")
        trailers += [("x-http-status", str(http_status)), ("x-error-json", text)]
        if error.reason in _NOT_RETRYABLE:
            trailers.append(("x-should-retry", "false"))
    await context.abort(error.grpc_code, error.message, trailing_metadata=tuple(trailers))


def _size(request: object) -> int:
    if isinstance(request, Undecodable):
        return request.size
    return request.ByteSize() if isinstance(request, Message) else 0


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
            call = RpcCall(context, _size(request))
            try:
                if isinstance(request, Undecodable):
                    raise _undecodable_error(request, call.from_rest)
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
            call = RpcCall(context, _size(request))
            started = False
            try:
                if isinstance(request, Undecodable):
                    raise _undecodable_error(request, call.from_rest)
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
