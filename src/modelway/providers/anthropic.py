"""The Anthropic Messages API wire format: POST /v1/messages, JSON answers and its typed SSE event stream."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FinishReason,
    ImagePart,
    Message,
    StreamEvent,
    TextPart,
    ToolCallDelta,
    Usage,
)
from modelway.errors import GatewayError, Reason
from modelway.providers.base import HttpRequest, SseEvent, Upstream, malformed, status_error
from modelway.providers.helpers import arguments_object, data_url

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicTranslator",
    "anthropic_error_to_gateway",
    "anthropic_message_to_events",
    "chat_request_to_anthropic",
]

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; the gateway normally sets it, this is the fallback.
_DEFAULT_MAX_TOKENS = 4096
_MAX_TEMPERATURE = 1.0

_FINISH: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's documented error types and the HTTP status each comes with, so
# that an error inside a stream or a 200 body is judged like the same error
# sent as a status.
_ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_CONTEXT_LENGTH = re.compile(r"prompt is too long|context (?:window|limit|length)", re.IGNORECASE)

# Cached prompt tokens are reported apart from input_tokens; all of them were prompt.
_PROMPT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def chat_request_to_anthropic(request: ChatRequest, model: str) -> dict[str, Any]:
    """The Messages API body for `request`; raises INVALID_VALUE for what Anthropic cannot express."""
    if request.n != 1:
        raise GatewayError(Reason.INVALID_VALUE, "This model supports only n=1.", param="n")
    if request.logprobs:
        raise GatewayError(Reason.INVALID_VALUE, "This model does not return logprobs.", param="logprobs")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens if request.max_tokens is not None else _DEFAULT_MAX_TOKENS,
        "messages": _messages_to_anthropic(request.messages),
    }
    system = _system_prompt(request)
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, _MAX_TEMPERATURE)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.stream:
        body["stream"] = True
    if request.tools:
        body["tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": dict(tool.parameters) or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
        body["tool_choice"] = _tool_choice_to_anthropic(request)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


def _system_prompt(request: ChatRequest) -> str:
    parts = [m.text for m in request.messages if m.role in ("system", "developer") and m.text]
    response_format = request.response_format
    # Anthropic has no response_format: the instruction is the closest it gets.
    if response_format.type == "json_object":
        parts.append("Answer with only a JSON object: no other text, no code fences.")
    elif response_format.type == "json_schema":
        schema = orjson.dumps(response_format.schema or {}).decode()
        parts.append(
            "Answer with only a JSON object that conforms to this JSON Schema, no other text, no code fences: " + schema
        )
    return "\n\n".join(parts)


def _tool_choice_to_anthropic(request: ChatRequest) -> dict[str, Any]:
    choice = request.tool_choice
    if choice.mode == "none":
        return {"type": "none"}
    result: dict[str, Any]
    if choice.mode == "required":
        result = {"type": "any"}
    elif choice.mode == "function":
        result = {"type": "tool", "name": choice.function_name}
    else:
        result = {"type": "auto"}
    if not request.parallel_tool_calls:
        result["disable_parallel_tool_use"] = True
    return result


def _messages_to_anthropic(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as strictly alternating turns: Anthropic rejects two turns of one role in a row."""
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _message_blocks(message, index)
        if not blocks:
            continue  # Anthropic rejects empty content.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _message_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    if message.role in ("tool", "function"):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.text:
            block["content"] = message.text
        return [block]
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part, index))
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": arguments_object(call.arguments, f"messages[{index}].tool_calls"),
            }
        )
    return blocks


def _image_block(part: ImagePart, index: int) -> dict[str, Any]:
    if part.url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    if not part.url.startswith("data:"):
        raise GatewayError(
            Reason.INVALID_VALUE,
            "Images must be http(s) URLs or base64 data: URLs.",
            param=f"messages[{index}].content",
        )
    media, data = data_url(part.url, f"messages[{index}].content")
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _finish_reason(stop_reason: object) -> FinishReason:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    return sum(int(usage.get(name) or 0) for name in _PROMPT_FIELDS)


def anthropic_error_to_gateway(error: Mapping[str, Any]) -> GatewayError:
    """An `{"type": ..., "message": ...}` error object sent inside a stream or a 200 body, as ours."""
    kind = str(error.get("type") or "")
    message = str(error.get("message") or kind or "unknown error")
    status = _ERROR_STATUS.get(kind, 500)
    return status_error(status, message, {}, context_length=bool(_CONTEXT_LENGTH.search(message)))


def anthropic_message_to_events(data: Mapping[str, Any]) -> list[StreamEvent]:
    """A whole Messages API answer as one content delta, one finish delta and its Usage."""
    if data.get("type") == "error":
        raise anthropic_error_to_gateway(data["error"])
    text: list[str] = []
    calls: list[ToolCallDelta] = []
    for block in data["content"]:
        if block["type"] == "text":
            text.append(block["text"])
        elif block["type"] == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(ToolCallDelta(index=len(calls), id=block["id"], name=block["name"], arguments=arguments))
        # Thinking and server tool blocks are Anthropic's own: the caller never asked for them.
    events: list[StreamEvent] = []
    content = "".join(text)
    if content or calls:
        events.append(ChoiceDelta(index=0, content=content, tool_calls=tuple(calls)))
    events.append(ChoiceDelta(index=0, finish_reason=_finish_reason(data.get("stop_reason"))))
    usage = data.get("usage")
    if isinstance(usage, Mapping):
        events.append(
            Usage(prompt_tokens=_prompt_tokens(usage), completion_tokens=int(usage.get("output_tokens") or 0))
        )
    return events


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed(f"{what} is not JSON") from None


@dataclass(slots=True)
class _ToolBlock:
    """A tool_use content block being streamed: our tool call index and whether any argument text came."""

    call_index: int
    has_arguments: bool = False


class AnthropicTranslator:
    """Speaks the Messages API for one request; holds that request's stream state."""

    def __init__(self, request: ChatRequest, upstream: Upstream) -> None:
        self._request = request
        self._upstream = upstream
        self._body = chat_request_to_anthropic(request, upstream.model)
        self._tool_blocks: dict[int, _ToolBlock] = {}
        self._tool_count = 0
        self._prompt_parts: dict[str, int] = {}
        self._completion_tokens = 0
        self._usage_seen = False
        self._finished = False
        self._stopped = False

    def request(self) -> HttpRequest:
        headers = {
            "x-api-key": self._upstream.api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            **self._upstream.headers,
        }
        return HttpRequest(
            url=f"{self._upstream.base_url}/v1/messages",
            headers=headers,
            body=orjson.dumps(self._body),
            streaming=self._request.stream,
        )

    def json_body(self, body: bytes) -> Sequence[StreamEvent]:
        data = _loads(body, "the body")
        try:
            return anthropic_message_to_events(data)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise malformed("unexpected message shape") from None

    def sse_event(self, event: SseEvent) -> Sequence[StreamEvent]:
        if not event.data.strip():
            return []
        data = _loads(event.data, f"a {event.event or 'stream'} event")
        try:
            return self._anthropic_event_to_chunks(data, event.event)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise malformed(f"unexpected {event.event or 'stream'} event shape") from None

    def end(self) -> Sequence[StreamEvent]:
        if not self._stopped:
            raise GatewayError(
                Reason.PROVIDER_ERROR, "The upstream provider ended the stream before message_stop.", retryable=True
            )
        if not self._usage_seen:
            return []
        return [Usage(prompt_tokens=sum(self._prompt_parts.values()), completion_tokens=self._completion_tokens)]

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        message = body.decode("utf-8", "replace").strip()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = str(data["error"].get("message") or data["error"].get("type") or message)
        return status_error(status, message, headers, context_length=bool(_CONTEXT_LENGTH.search(message)))

    def _anthropic_event_to_chunks(self, data: Any, name: str) -> list[StreamEvent]:
        kind = data.get("type") or name
        if kind == "message_start":
            self._remember_usage(data["message"].get("usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(int(data["index"]), data["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(int(data["index"]), data["delta"])
        if kind == "content_block_stop":
            block = self._tool_blocks.get(int(data["index"]))
            if block is not None and not block.has_arguments:
                # A call without any input is still a call: its arguments must be valid JSON.
                block.has_arguments = True
                return [self._call_piece(ToolCallDelta(index=block.call_index, arguments="{}"))]
            return []
        if kind == "message_delta":
            self._remember_usage(data.get("usage"))
            stop_reason = data["delta"].get("stop_reason")
            if stop_reason is None or self._finished:
                return []
            self._finished = True
            return [ChoiceDelta(index=0, finish_reason=_finish_reason(stop_reason))]
        if kind == "message_stop":
            self._stopped = True
            if self._finished:
                return []
            self._finished = True
            return [ChoiceDelta(index=0, finish_reason="stop")]
        if kind == "error":
            raise anthropic_error_to_gateway(data["error"])
        # ping, and event types Anthropic may add later: its versioning policy says to ignore them.
        return []

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[StreamEvent]:
        if block["type"] == "text":
            text = block.get("text") or ""
            return [ChoiceDelta(index=0, content=text)] if text else []
        if block["type"] != "tool_use":
            return []
        state = _ToolBlock(self._tool_count)
        self._tool_count += 1
        self._tool_blocks[index] = state
        initial = block.get("input")
        # The start normally carries `"input": {}` as a placeholder; the real input follows as JSON fragments.
        arguments = orjson.dumps(initial).decode() if initial else ""
        state.has_arguments = bool(arguments)
        return [
            self._call_piece(
                ToolCallDelta(index=state.call_index, id=block["id"], name=block["name"], arguments=arguments)
            )
        ]

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[StreamEvent]:
        kind = delta["type"]
        if kind == "text_delta":
            text = delta["text"]
            return [ChoiceDelta(index=0, content=text)] if text else []
        if kind == "input_json_delta":
            state = self._tool_blocks.get(index)
            fragment = delta["partial_json"]
            if state is None or not fragment:
                return []
            state.has_arguments = True
            return [self._call_piece(ToolCallDelta(index=state.call_index, arguments=fragment))]
        # thinking_delta, signature_delta, citations_delta: not part of the chat completion.
        return []

    @staticmethod
    def _call_piece(piece: ToolCallDelta) -> ChoiceDelta:
        return ChoiceDelta(index=0, tool_calls=(piece,))

    def _remember_usage(self, usage: Any) -> None:
        if not isinstance(usage, Mapping):
            return
        # Counts are cumulative; message_delta may leave a field out (or null), which keeps its earlier value.
        for name, value in usage.items():
            if value is None:
                continue
            if name in _PROMPT_FIELDS:
                self._prompt_parts[name] = int(value)
                self._usage_seen = True
            elif name == "output_tokens":
                self._completion_tokens = int(value)
                self._usage_seen = True
