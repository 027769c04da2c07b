"""ChatService: the typed native RPCs and the REST (HttpBody) endpoint over one core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.api import httpbody_pb2

from modelway.core.access import Gate
from modelway.core.chat import ChatEngine, Completion
from modelway.core.directory import Caller
from modelway.core.metering import CallMeter, Metering
from modelway.core.types import ChoiceDelta, Usage
from modelway.services._rpc import RpcCall, as_gateway_error, stream, unary
from modelway.surfaces import openai
from modelway.surfaces.openai_request import to_chat_request
from modelway.v1 import chat_pb2, chat_pb2_grpc, common_pb2

__all__ = ["ChatServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
_JSON = "application/json"
_SSE = "text/event-stream"


def _usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def _completion_proto(completion: Completion) -> chat_pb2.ChatCompletion:
    return chat_pb2.ChatCompletion(
        id=completion.id,
        object="chat.completion",
        created=completion.created,
        model=completion.model,
        choices=[
            chat_pb2.ChatCompletionChoice(
                index=choice.index,
                message=chat_pb2.AssistantMessage(
                    role="assistant",
                    content=choice.content,
                    tool_calls=[
                        chat_pb2.ToolCall(
                            id=call.id,
                            type="function",
                            function=chat_pb2.FunctionCall(name=call.name, arguments=call.arguments),
                        )
                        for call in choice.tool_calls
                    ],
                ),
                finish_reason=choice.finish_reason,
            )
            for choice in completion.choices
        ],
        usage=_usage_proto(completion.usage),
    )


def _delta_proto(event: ChoiceDelta, first: bool) -> chat_pb2.ChatCompletionChunkChoice:
    return chat_pb2.ChatCompletionChunkChoice(
        index=event.index,
        delta=chat_pb2.ChatCompletionDelta(
            role="assistant" if first else "",
            content=event.content or None,
            tool_calls=[
                chat_pb2.ToolCallDelta(
                    index=call.index,
                    id=call.id,
                    type="function" if call.id else "",
                    function=chat_pb2.FunctionCall(name=call.name, arguments=call.arguments),
                )
                for call in event.tool_calls
            ],
        ),
        finish_reason=event.finish_reason or "",
    )


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, engine: ChatEngine, gate: Gate, metering: Metering) -> None:
        self._engine = engine
        self._gate = gate
        self._metering = metering

    async def _admit(self, call: RpcCall, meter: CallMeter) -> Caller:
        caller = await self._gate.authenticate(call.metadata)
        meter.attribute(caller)
        self._gate.require(caller, "chat.completions")
        call.headers.extend(self._gate.admit(caller, "chat"))
        return caller

    @unary(openai.error_response)
    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> chat_pb2.ChatCompletion:
        with self._metering.open(request_id=call.request_id, surface="grpc") as meter:
            caller = await self._admit(call, meter)
            completion = await self._engine.complete(to_chat_request(request), caller, meter)
            return _completion_proto(completion)

    @stream(openai.error_response)
    async def StreamChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        with self._metering.open(request_id=call.request_id, surface="grpc") as meter:
            caller = await self._admit(call, meter)
            chat = to_chat_request(request)
            running = self._engine.start(chat, caller, meter)
            started: set[int] = set()
            async with aclosing(running.events) as events:
                async for event in events:
                    chunk = chat_pb2.ChatCompletionChunk(
                        id=running.id, object="chat.completion.chunk", created=running.created, model=running.model
                    )
                    if isinstance(event, Usage):
                        chunk.usage.CopyFrom(_usage_proto(event))
                    else:
                        chunk.choices.append(_delta_proto(event, event.index not in started))
                        started.add(event.index)
                    yield chunk

    @stream(openai.error_response)
    async def CreateChatCompletionHttp(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        with self._metering.open(request_id=call.request_id, surface="openai", status_of=openai.error_status) as meter:
            caller = await self._admit(call, meter)
            chat = to_chat_request(request)
            if not chat.stream:
                completion = await self._engine.complete(chat, caller, meter)
                yield httpbody_pb2.HttpBody(content_type=_JSON, data=openai.completion_json(completion))
                return
            running = self._engine.start(chat, caller, meter)
            renderer = openai.ChunkRenderer(running, include_usage=chat.include_usage)
            async with aclosing(running.events) as events:
                # Pull the first event before answering, so an early failure
                # (upstream refused, bad tool_choice) is a proper HTTP error.
                first = await anext(events, None)
                if first is not None:
                    yield httpbody_pb2.HttpBody(content_type=_SSE, data=renderer.event(first))
                try:
                    async for event in events:
                        frame = renderer.event(event)
                        if frame:
                            yield httpbody_pb2.HttpBody(content_type=_SSE, data=frame)
                except Exception as exc:
                    # The response has begun: the failure goes into the stream, which still ends properly.
                    error = as_gateway_error(exc)
                    meter.fail(error)
                    yield httpbody_pb2.HttpBody(content_type=_SSE, data=renderer.error(error))
            yield httpbody_pb2.HttpBody(content_type=_SSE, data=openai.sse_done())
