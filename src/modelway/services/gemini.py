"""GeminiService (typed, native gRPC) and GeminiRestService (the Gemini REST endpoints): parse -> pipeline -> render."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
import orjson
from google.api import httpbody_pb2
from google.protobuf import json_format, struct_pb2

from modelway.core.access import Gate
from modelway.core.catalog import Catalog
from modelway.core.coalesce import coalesced
from modelway.core.pipeline import Pipeline
from modelway.core.types import ChatRequest, Usage
from modelway.errors import GatewayError, Reason, clip
from modelway.services._rpc import RpcCall, stream, unary
from modelway.services.delivery import complete_in_time, deliver, in_time
from modelway.services.models import visible_to
from modelway.surfaces.dialect import respond
from modelway.surfaces.gemini import GEMINI, GEMINI_ARRAY, GEMINI_GRPC, GeminiChunks, completion_dict, model_dict
from modelway.surfaces.gemini_request import (
    check_stream_format,
    model_from_path,
    parse_generate_content,
    parse_generate_content_body,
    stream_format,
)
from modelway.surfaces.grpc import integral_numbers
from modelway.v1 import gemini_pb2, gemini_pb2_grpc
from modelway.v1.rest import gemini_pb2 as gemini_rest_pb2
from modelway.v1.rest import gemini_pb2_grpc as gemini_rest_pb2_grpc

__all__ = ["GeminiRestServicer", "GeminiServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

# Google's defaults for models.list.
_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_JSON = "application/json"


def request_from_proto(request: gemini_pb2.GenerateContentRequest, *, stream: bool) -> ChatRequest:
    """The typed request, checked by the same rules (and in the same words) as the REST body."""
    try:
        # camelCase JSON names, as the REST API takes them; bytes become base64 text.
        data: dict[str, Any] = json_format.MessageToDict(request)
    except json_format.SerializeToJsonError:
        raise GatewayError(
            Reason.INVALID_VALUE,
            "Invalid value: a number in an object field (args, a schema, ...) is NaN or Infinity; numbers there "
            "must be finite.",
        ) from None
    data.pop("model", None)
    return parse_generate_content(model_from_path(request.model), integral_numbers(data), stream=stream)


def _part_proto(part: dict[str, Any]) -> gemini_pb2.GeminiPart:
    call = part.get("functionCall")
    if call is None:
        return gemini_pb2.GeminiPart(text=part["text"])
    args = struct_pb2.Struct()
    args.update(call["args"])
    return gemini_pb2.GeminiPart(
        function_call=gemini_pb2.GeminiFunctionCall(id=call["id"], name=call["name"], args=args)
    )


def _response_proto(piece: dict[str, Any]) -> gemini_pb2.GenerateContentResponse:
    """The typed message for one of the dialect's response dicts, built field by field: json_format's
    ParseDict walks descriptors and costs several times as much, once per streamed chunk."""
    response = gemini_pb2.GenerateContentResponse(model_version=piece["modelVersion"], response_id=piece["responseId"])
    for candidate in piece.get("candidates", ()):
        content = candidate["content"]
        response.candidates.append(
            gemini_pb2.GeminiCandidate(
                content=gemini_pb2.GeminiContent(
                    role=content["role"], parts=[_part_proto(part) for part in content.get("parts", ())]
                ),
                finish_reason=candidate.get("finishReason", ""),
                index=candidate["index"],
            )
        )
    usage = piece.get("usageMetadata")
    if usage is not None:
        response.usage_metadata.CopyFrom(
            gemini_pb2.GeminiUsageMetadata(
                prompt_token_count=usage["promptTokenCount"],
                candidates_token_count=usage["candidatesTokenCount"],
                total_token_count=usage["totalTokenCount"],
            )
        )
    return response


class GeminiServicer(gemini_pb2_grpc.GeminiServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @unary(GEMINI.error_response)
    async def GenerateContent(
        self, request: gemini_pb2.GenerateContentRequest, context: Context, call: RpcCall
    ) -> gemini_pb2.GenerateContentResponse:
        parse = in_time(call, lambda: request_from_proto(request, stream=False))
        async with self._pipeline.chat(call, GEMINI_GRPC, parse) as run:
            answer = _response_proto(completion_dict(run, await complete_in_time(call, run)))
            await deliver(call, run)
            return answer

    @stream(GEMINI.error_response)
    async def StreamGenerateContent(
        self, request: gemini_pb2.GenerateContentRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[gemini_pb2.GenerateContentResponse]:
        parse = in_time(call, lambda: request_from_proto(request, stream=True))
        async with self._pipeline.chat(call, GEMINI_GRPC, parse) as run:
            chunks = GeminiChunks(run)
            # What arrived together goes out as one message per candidate (core/coalesce.py).
            async with aclosing(run.event_groups()) as groups:
                async for group in groups:
                    for event in coalesced(group):
                        piece = chunks.chunk(event)
                        if isinstance(event, Usage):
                            # The last message: the usage row is committed before it goes out.
                            await run.finish()
                        if piece is not None:
                            yield _response_proto(piece)


def _page_start(token: str) -> int:
    """Where a page token says the next page starts (tokens are opaque to callers: base64 of "o:<offset>")."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        text = ""
    kind, _, offset = text.partition(":")
    # ASCII digits only ("²" is a digit to str.isdigit, and int() refuses it), and no more than a list can hold.
    if kind != "o" or not (offset.isascii() and offset.isdigit()) or len(offset) > 18:
        raise GatewayError(
            Reason.INVALID_VALUE,
            f"Invalid page token {clip(token)!r}: pass a nextPageToken as given.",
            param="pageToken",
        )
    return int(offset)


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


class GeminiRestServicer(gemini_rest_pb2_grpc.GeminiRestServiceServicer):
    def __init__(self, pipeline: Pipeline, catalog: Catalog, gate: Gate) -> None:
        self._pipeline = pipeline
        self._catalog = catalog
        self._gate = gate

    @stream(GEMINI.error_response)
    async def GenerateContent(
        self, request: gemini_rest_pb2.GenerateContentHttpRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        parse = lambda: parse_generate_content_body(request.model, request.body.data, stream=False)  # noqa: E731
        async for body in respond(self._pipeline, call, GEMINI, parse):
            yield body

    @stream(GEMINI.error_response)
    async def StreamGenerateContent(
        self, request: gemini_rest_pb2.GenerateContentHttpRequest, context: Context, call: RpcCall
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        # `?alt=sse` (what the google-genai SDK sends): server-sent events; without it, as at Google, one JSON array.
        alt = stream_format(call.metadata)

        def parse() -> ChatRequest:
            check_stream_format(alt)  # after the key is checked, like any fault in the request
            return parse_generate_content_body(request.model, request.body.data, stream=True)

        async for body in respond(self._pipeline, call, GEMINI if alt == "sse" else GEMINI_ARRAY, parse):
            yield body

    @unary(GEMINI.error_response)
    async def ListModels(
        self, request: gemini_rest_pb2.ListGeminiModelsRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        caller = await self._gate.authorize(call.metadata, "models.list", GEMINI.wording)
        if request.page_size < 0:
            raise GatewayError(
                Reason.INVALID_VALUE, "Invalid value at 'pageSize': it must not be negative.", param="pageSize"
            )
        size = min(request.page_size or _PAGE_SIZE, _MAX_PAGE_SIZE)
        start = _page_start(request.page_token)
        # Only chat models: every model listed here advertises generateContent.
        models = [model for model in self._catalog.all() if model.type == "chat" and visible_to(caller, model)]
        body: dict[str, Any] = {"models": [model_dict(model) for model in models[start : start + size]]}
        if start + size < len(models):
            body["nextPageToken"] = _page_token(start + size)
        return httpbody_pb2.HttpBody(content_type=_JSON, data=orjson.dumps(body))

    @unary(GEMINI.error_response)
    async def GetModel(
        self, request: gemini_rest_pb2.GetGeminiModelRequest, context: Context, call: RpcCall
    ) -> httpbody_pb2.HttpBody:
        caller = await self._gate.authorize(call.metadata, "models.list", GEMINI.wording)
        name = model_from_path(request.model)
        model = self._catalog.resolve(name)
        if model.type != "chat" or not visible_to(caller, model):
            # As in the list: an image model has no generateContent, so it is not a Gemini model.
            raise self._catalog.not_found(name)
        return httpbody_pb2.HttpBody(content_type=_JSON, data=orjson.dumps(model_dict(model)))
