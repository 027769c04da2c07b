"""ChatService (typed, native gRPC) and ChatRestService (the OpenAI REST endpoint): parse -> pipeline -> render."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.core.pipeline import Pipeline
from modelway.core.types import Usage
from modelway.services._rpc import RpcCall, stream, unary
from modelway.services.delivery import complete_in_time, deliver, in_time
from modelway.surfaces.dialect import respond
from modelway.surfaces.grpc import GRPC, ChunkBuilder, chat_request_from_proto, completion_proto
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_request import parse_chat_body
from modelway.v1 import chat_pb2, chat_pb2_grpc
from modelway.v1.rest import chat_pb2_grpc as chat_rest_pb2_grpc

__all__ = ["ChatRestServicer", "ChatServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @unary(OPENAI.error_response)
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> chat_pb2.ChatCompletion:
        async with self._pipeline.chat(call, GRPC, in_time(call, lambda: chat_request_from_proto(request))) as run:
            answer = completion_proto(run, await complete_in_time(call, run))
            await deliver(call, run)
            return answer

    @stream(OPENAI.error_response)
    async def StreamChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        async with self._pipeline.chat(call, GRPC, in_time(call, lambda: chat_request_from_proto(request))) as run:
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
