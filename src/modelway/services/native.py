"""AiRestService (gateway-native REST) and GenerateService (its typed gRPC twin): parse -> pipeline -> render."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.core.coalesce import coalesced
from modelway.core.pipeline import Pipeline
from modelway.core.types import ChatRequest, FinishReason, Usage
from modelway.errors import GatewayError, Reason
from modelway.services._rpc import RpcCall, stream, unary
from modelway.services.delivery import complete_in_time, deliver, in_time
from modelway.surfaces.dialect import MAX_ANSWER_BYTES, stream_answer
from modelway.surfaces.grpc import GRPC_GENERATE
from modelway.surfaces.native import NATIVE, with_retry_after
from modelway.surfaces.native_grpc import generate_request_from_proto, generate_response_proto, summary_proto
from modelway.surfaces.native_request import Kind, parse_native_body
from modelway.v1 import generate_pb2, generate_pb2_grpc
from modelway.v1.rest import ai_pb2_grpc

__all__ = ["AiRestServicer", "GenerateServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
_JSON = "application/json"


async def _answer(
    pipeline: Pipeline, call: RpcCall, parse: Callable[[], ChatRequest]
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """One native call's HTTP body: the JSON answer, or SSE frames (shared with every dialect's streams).

    Unlike `respond`, a whole answer is rendered after the call is settled: it shows the credits the
    call cost and what the account has left."""
    try:
        async with pipeline.chat(call, NATIVE, parse) as run:
            if run.request.stream:
                async for body in stream_answer(run, NATIVE):
                    yield body
                return
            completion = await run.complete()
            await run.finish()
            body = NATIVE.completion(run, completion)
            if len(body) > MAX_ANSWER_BYTES:
                # One choice rarely gets here; the answer is not delivered, so its charge is refunded.
                error = GatewayError(
                    Reason.INVALID_VALUE,
                    f"The answer is {len(body)} bytes, more than the {MAX_ANSWER_BYTES} a whole JSON answer may "
                    f"have. {NATIVE.wording.answer_smaller}",
                    param="stream",
                )
                await run.withdraw(error)
                raise error
            yield httpbody_pb2.HttpBody(content_type=_JSON, data=body)
    except GatewayError as error:
        raise with_retry_after(error) from None


def _body(request: httpbody_pb2.HttpBody, kind: Kind) -> Callable[[], ChatRequest]:
    return lambda: parse_native_body(request.data, kind)


class AiRestServicer(ai_pb2_grpc.AiRestServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @stream(NATIVE.error_response)
    async def Chat(
        self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in _answer(self._pipeline, call, _body(request, "chat")):
            yield body

    @stream(NATIVE.error_response)
    async def Generate(
        self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in _answer(self._pipeline, call, _body(request, "generate")):
            yield body

    @unary(NATIVE.error_response)
    async def Embed(self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall) -> httpbody_pb2.HttpBody:
        # Who asks is checked, permitted and counted first (401, 403, 429), as on every model route, and the
        # refusal is recorded; no model of type embedding exists yet.
        await self._pipeline.refuse(
            call,
            NATIVE,
            GatewayError(
                Reason.NOT_IMPLEMENTED,
                "Embeddings are not available yet: no embedding model is configured on this gateway.",
            ),
        )


class GenerateServicer(generate_pb2_grpc.GenerateServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @unary(NATIVE.error_response)
    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: Context, call: RpcCall
    ) -> generate_pb2.GenerateResponse:
        parse = in_time(call, lambda: generate_request_from_proto(request, stream=False))
        try:
            async with self._pipeline.chat(call, GRPC_GENERATE, parse) as run:
                completion = await complete_in_time(call, run)
                await deliver(call, run)
                return generate_response_proto(run, completion)
        except GatewayError as error:
            raise with_retry_after(error) from None

    @stream(NATIVE.error_response)
    async def StreamGenerate(
        self, request: generate_pb2.GenerateRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[generate_pb2.StreamGenerateResponse]:
        parse = in_time(call, lambda: generate_request_from_proto(request, stream=True))
        try:
            async with self._pipeline.chat(call, GRPC_GENERATE, parse) as run:
                reason: FinishReason | None = None
                # What arrived together goes out as one message (core/coalesce.py), not one per delta.
                async with aclosing(run.event_groups()) as groups:
                    async for group in groups:
                        for event in coalesced(group):
                            if isinstance(event, Usage):
                                # The last message shows the settled credits: the row is committed first.
                                await run.finish()
                                yield summary_proto(run, event, reason)
                                continue
                            reason = event.finish_reason or reason
                            if event.content:
                                yield generate_pb2.StreamGenerateResponse(text=event.content)
        except GatewayError as error:
            raise with_retry_after(error) from None
