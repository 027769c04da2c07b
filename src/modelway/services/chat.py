"""ChatService (typed, native gRPC) and ChatRestService (the OpenAI REST endpoint): parse -> pipeline -> render."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.core.coalesce import coalesced
from modelway.core.offload import off_loop_if_large
from modelway.core.pipeline import Pipeline
from modelway.core.tokens import count_tokens
from modelway.core.types import Usage
from modelway.errors import GatewayError, Reason
from modelway.services._rpc import RpcCall, stream, unary
from modelway.services.delivery import complete_in_time, deliver, in_time
from modelway.surfaces.dialect import MAX_ANSWER_BYTES, respond
from modelway.surfaces.grpc import GRPC, ChunkBuilder, chat_request_from_proto, completion_proto
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_chat_images import (
    OPENAI_CHAT_IMAGES,
    ChatImageAnswer,
    image_output_body,
    mentions_image_output,
    parse_chat_image,
)
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
            # What arrived together goes out as one chunk per choice (core/coalesce.py), not one per delta.
            async with aclosing(run.event_groups()) as groups:
                async for group in groups:
                    for event in coalesced(group):
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
        data = request.data
        image_body = None
        if await off_loop_if_large(len(data), lambda: mentions_image_output(data)) and await self._pipeline.knows_key(
            call, OPENAI_CHAT_IMAGES
        ):
            # Parsed only for a key that authenticates: a caller without one goes the chat way, which
            # refuses it (and records the call) before reading the body.
            image_body = await off_loop_if_large(len(data), lambda: image_output_body(data))
        if image_body is not None:
            yield await self._image(image_body, call)
            return
        async for body in respond(self._pipeline, call, OPENAI, lambda: parse_chat_body(request.data)):
            yield body

    async def _image(self, data: dict[str, Any], call: RpcCall) -> httpbody_pb2.HttpBody:
        """A chat call asking for image output: generated like an Images API call, answered as a chat completion."""
        async with self._pipeline.images(call, OPENAI_CHAT_IMAGES, lambda: parse_chat_image(data)) as run:
            images = await run.generate()
            answer = ChatImageAnswer(
                secrets.token_urlsafe(18), run.created, run.model, count_tokens(run.request.prompt)
            )
            # parse_chat_image checked these fields' types: they are a bool and an object, or absent.
            if data.get("stream") is True:
                options = data.get("stream_options") or {}
                body = answer.stream(images, include_usage=options.get("include_usage") is True)
                content_type = "text/event-stream"
            else:
                body, content_type = answer.completion(images), "application/json"
            if len(body) > MAX_ANSWER_BYTES:
                # Envoy buffers a whole answer; past this it would be cut. Nothing is charged.
                raise GatewayError(
                    Reason.INVALID_VALUE,
                    f"The answer is {len(body)} bytes, more than the {MAX_ANSWER_BYTES} an answer may have.",
                )
            await run.finish()
            return httpbody_pb2.HttpBody(content_type=content_type, data=body)
