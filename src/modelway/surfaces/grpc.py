"""The native gRPC surfaces (each typed service's usage-row name) and the typed ChatCompletion and
ChatCompletionChunk messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from modelway.core.pipeline import ChatRun, Completion
from modelway.core.types import ChatRequest, ChoiceDelta, StreamEvent, Usage
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason
from modelway.surfaces.openai import OPENAI_WORDING
from modelway.surfaces.openai_images import IMAGES_WORDING
from modelway.surfaces.openai_request import MAX_MESSAGES, parse_chat_request
from modelway.v1 import chat_pb2, common_pb2

__all__ = [
    "GRPC",
    "GRPC_GENERATE",
    "GRPC_IMAGES",
    "GRPC_WORDING",
    "ChunkBuilder",
    "GrpcSurface",
    "chat_request_from_proto",
    "completion_proto",
    "key_wording",
]

# The typed gRPC services: the key goes in request metadata.
GRPC_WORDING = Wording(
    send_key="Send it as 'authorization: Bearer YOUR_KEY' metadata.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Use the streaming RPC, or ask for fewer choices or fewer tokens.",
)
_GRPC_IMAGES_WORDING = Wording(
    send_key=GRPC_WORDING.send_key,
    spend_less=IMAGES_WORDING.spend_less,
    answer_smaller="Ask for fewer images (n), or response_format 'url' instead of 'b64_json'.",
)


def key_wording(from_rest: bool) -> Wording:
    """How to send a key to a service that both REST (through Envoy, in OpenAI's words) and typed gRPC
    callers reach: models, usage, keys."""
    return OPENAI_WORDING if from_rest else GRPC_WORDING


@dataclass(frozen=True)
class GrpcSurface:
    """A typed native gRPC service: its usage rows carry its own name; the status recorded is the reason's own
    HTTP status."""

    name: str
    wording: Wording

    def status(self, error: GatewayError) -> int:
        return error.http_status


# ChatService, GenerateService and ImagesService: each service's rows apart from the others'.
GRPC = GrpcSurface("grpc", GRPC_WORDING)
GRPC_GENERATE = GrpcSurface("grpc-generate", GRPC_WORDING)
GRPC_IMAGES = GrpcSurface("grpc-images", _GRPC_IMAGES_WORDING)


def _usage(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def completion_proto(run: ChatRun, completion: Completion) -> chat_pb2.ChatCompletion:
    return chat_pb2.ChatCompletion(
        id="chatcmpl-" + run.id,
        object="chat.completion",
        created=run.created,
        model=run.model,
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
        usage=_usage(completion.usage),
    )


class ChunkBuilder:
    """One stream's ChatCompletionChunk messages; a choice's first chunk carries the role."""

    def __init__(self, run: ChatRun) -> None:
        self._run = run
        self._started: set[int] = set()

    def chunk(self, event: StreamEvent) -> chat_pb2.ChatCompletionChunk:
        run = self._run
        chunk = chat_pb2.ChatCompletionChunk(
            id="chatcmpl-" + run.id, object="chat.completion.chunk", created=run.created, model=run.model
        )
        if isinstance(event, Usage):
            chunk.usage.CopyFrom(_usage(event))
        else:
            chunk.choices.append(self._choice(event))
        return chunk

    def _choice(self, event: ChoiceDelta) -> chat_pb2.ChatCompletionChunkChoice:
        first = event.index not in self._started
        self._started.add(event.index)
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


def _message_json(message: chat_pb2.ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    data.pop("text", None)
    data.pop("parts", None)
    which = message.WhichOneof("content_value")
    if which == "text":
        data["content"] = message.text
    elif which == "parts":
        data["content"] = [
            {"type": "text", "text": part.text}
            if part.WhichOneof("part") == "text"
            else {
                "type": "image_url",
                "image_url": {"url": part.image_url.url, "detail": part.image_url.detail or "auto"},
            }
            for part in message.parts.parts
        ]
    return data


def chat_request_from_proto(request: chat_pb2.CreateChatCompletionRequest) -> ChatRequest:
    """The typed request, checked by the same rules (and in the same words) as the REST body."""
    if len(request.messages) > MAX_MESSAGES:
        # Before anything is built from them: converting 600,000 messages would take seconds.
        raise GatewayError(
            Reason.ARRAY_TOO_LONG,
            f"Invalid 'messages': array too long. Expected an array with maximum length {MAX_MESSAGES}, but got an "
            f"array with length {len(request.messages)} instead.",
            param="messages",
        )
    try:
        data: dict[str, Any] = json_format.MessageToDict(request, preserving_proto_field_name=True)
    except json_format.SerializeToJsonError:
        # A Struct (tool parameters, a schema, ...) may carry NaN or Infinity, which JSON cannot.
        raise GatewayError(
            Reason.INVALID_VALUE,
            "Invalid request: a number in an object field (tool parameters, a schema, ...) is NaN or Infinity; "
            "numbers there must be finite.",
        ) from None
    for name in (
        "stop_sequences",
        "tool_choice_mode",
        "tool_choice_function",
        "function_call_mode",
        "function_call_name",
    ):
        data.pop(name, None)
    data["messages"] = [_message_json(message) for message in request.messages]
    if request.stop_sequences:
        data["stop"] = list(request.stop_sequences)
    if request.HasField("seed"):
        data["seed"] = request.seed  # int64 prints as a string in JSON
    tool_choice = request.WhichOneof("tool_choice_value")
    if tool_choice == "tool_choice_mode":
        data["tool_choice"] = request.tool_choice_mode
    elif tool_choice == "tool_choice_function":
        data["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice_function}}
    function_call = request.WhichOneof("function_call_value")
    if function_call == "function_call_mode":
        data["function_call"] = request.function_call_mode
    elif function_call == "function_call_name":
        data["function_call"] = {"name": request.function_call_name}
    return parse_chat_request(integral_numbers(data))


def integral_numbers(value: Any) -> Any:
    """Struct keeps every JSON number as a double; schemas and counts mean 1, not 1.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_numbers(item) for item in value]
    return value
