"""ChatService (typed, native gRPC) and ChatRestService (the OpenAI REST endpoint): parse -> pipeline -> render."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.core.pipeline import ChatRun, Completion, Pipeline
from modelway.core.types import ChatRequest, Usage
from modelway.errors import GatewayError, Reason
from modelway.services._rpc import RpcCall, stream, unary
from modelway.surfaces.dialect import respond
from modelway.surfaces.grpc import GRPC, ChunkBuilder, chat_request_from_proto, completion_proto
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_request import parse_chat_body
from modelway.v1 import chat_pb2, chat_pb2_grpc
from modelway.v1.rest import chat_pb2_grpc as chat_rest_pb2_grpc

__all__ = ["ChatRestServicer", "ChatServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

# An answer with less time than this left before the caller's deadline is not sent: its usage
# row must be committed first (a group commit waits a few ms for company), and sending it and
# the caller reading it take a moment more, longer on a loaded machine. Checked before the row
# is committed, and again after (the answer is then withdrawn: see _deliver).
_DELIVERY_MARGIN = 0.050


def _deadline_error() -> GatewayError:
    return GatewayError(Reason.DEADLINE_EXCEEDED, "The call's deadline passed before its answer was ready.")


def _in_time(call: RpcCall, parse: Callable[[], ChatRequest]) -> Callable[[], ChatRequest]:
    """`parse`, refused when the caller's deadline has passed already (inside the pipeline: a 504 row, no charge)."""

    def checked() -> ChatRequest:
        remaining = call.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _deadline_error()
        return parse()

    return checked


async def _complete(call: RpcCall, run: ChatRun) -> Completion:
    """The whole answer, bounded by the caller's deadline; one ready too late is recorded as not delivered."""
    remaining = call.time_remaining()
    if remaining is None:
        return await run.complete()
    try:
        async with asyncio.timeout(remaining - _DELIVERY_MARGIN):
            completion = await run.complete()
    except TimeoutError:
        raise _deadline_error() from None
    left = call.time_remaining()
    if left is not None and left < _DELIVERY_MARGIN:
        error = _deadline_error()
        run.undelivered(error)
        raise error
    return completion


async def _deliver(call: RpcCall, run: ChatRun) -> None:
    """Commits the usage row before the answer goes out (so it survives a crash once sent); an answer
    whose caller's deadline passed meanwhile never reaches it, so its row is withdrawn and refunded."""
    try:
        await run.finish()
    except asyncio.CancelledError:
        await run.withdraw(_deadline_error())
        raise
    left = call.time_remaining()
    if left is not None and left < _DELIVERY_MARGIN:
        error = _deadline_error()
        await run.withdraw(error)
        raise error


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @unary(OPENAI.error_response)
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> chat_pb2.ChatCompletion:
        async with self._pipeline.chat(call, GRPC, _in_time(call, lambda: chat_request_from_proto(request))) as run:
            answer = completion_proto(run, await _complete(call, run))
            await _deliver(call, run)
            return answer

    @stream(OPENAI.error_response)
    async def StreamChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        async with self._pipeline.chat(call, GRPC, _in_time(call, lambda: chat_request_from_proto(request))) as run:
            chunks = ChunkBuilder(run)
            async with aclosing(run.events()) as events:
                async for event in events:
                    chunk = chunks.chunk(event)
                    if isinstance(event, Usage):
                        # The last chunk: the usage row is committed before it goes out.
                        await run.finish()
                    yield chunk


class ChatRestServicer(chat_rest_pb2_grpc.ChatRestServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @stream(OPENAI.error_response)
    async def CreateChatCompletion(
        self, request: httpbody_pb2.HttpBody, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in respond(self._pipeline, call, OPENAI, lambda: parse_chat_body(request.data)):
            yield body
