"""Renders completions, stream chunks and errors as the exact OpenAI JSON and SSE bytes."""

from __future__ import annotations

import json
from typing import Any

from modelway.core.chat import ChatStream, Completion
from modelway.core.types import ChoiceDelta, ToolCall, Usage
from modelway.errors import GatewayError, InsufficientCredits

__all__ = ["ChunkRenderer", "completion_json", "error_json", "error_response", "error_status", "sse_done", "sse_event"]

_SSE_DONE = b"data: [DONE]\n\n"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def completion_json(completion: Completion) -> bytes:
    """The `chat.completion` object of a non-streamed call."""
    choices = []
    for choice in completion.choices:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": choice.content,
            "refusal": None,
            "annotations": [],
        }
        if choice.tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in choice.tool_calls]
        choices.append(
            {"index": choice.index, "message": message, "logprobs": None, "finish_reason": choice.finish_reason}
        )
    return _dumps(
        {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": choices,
            "usage": _usage(completion.usage),
            "service_tier": "default",
            "system_fingerprint": None,
        }
    )


def error_status(error: GatewayError) -> int:
    """OpenAI answers an empty balance with 429 insufficient_quota, not 402."""
    return 429 if isinstance(error, InsufficientCredits) else error.http_status


def error_response(error: GatewayError) -> tuple[int, bytes]:
    return error_status(error), error_json(error)


def error_json(error: GatewayError) -> bytes:
    return _dumps(
        {"error": {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}}
    )


def sse_event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


def sse_done() -> bytes:
    return _SSE_DONE


class ChunkRenderer:
    """Turns one stream's events into `chat.completion.chunk` SSE frames.

    A choice's first chunk carries the role; with include_usage every chunk
    has `"usage": null` and a last chunk with empty choices carries the usage.
    """

    def __init__(self, stream: ChatStream, *, include_usage: bool) -> None:
        self._head = {
            "id": stream.id,
            "object": "chat.completion.chunk",
            "created": stream.created,
            "model": stream.model,
        }
        self._include_usage = include_usage
        self._started: set[int] = set()

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        chunk: dict[str, Any] = {**self._head, "system_fingerprint": None, "choices": choices}
        if self._include_usage:
            chunk["usage"] = None if usage is None else _usage(usage)
        return sse_event(_dumps(chunk))

    def delta(self, event: ChoiceDelta) -> bytes:
        delta: dict[str, Any] = {}
        if event.index not in self._started:
            self._started.add(event.index)
            # OpenAI opens a text answer with content "" and a tool call with null.
            delta.update(role="assistant", content=None if event.tool_calls else "", refusal=None)
        if event.content:
            delta["content"] = event.content
        if event.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": call.index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                if call.id
                else {"index": call.index, "function": {"arguments": call.arguments}}
                for call in event.tool_calls
            ]
        choice: dict[str, Any] = {
            "index": event.index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": event.finish_reason,
        }
        return self._chunk([choice])

    def usage(self, usage: Usage) -> bytes:
        return self._chunk([], usage)

    def event(self, event: ChoiceDelta | Usage) -> bytes:
        """The frame for any stream event; b"" for the usage when it was not asked for."""
        if isinstance(event, Usage):
            return self.usage(event) if self._include_usage else b""
        return self.delta(event)

    def error(self, error: GatewayError) -> bytes:
        """A failure after the stream began: written into it, as OpenAI does."""
        return sse_event(error_json(error))
