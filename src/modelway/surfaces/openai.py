"""The OpenAI dialect: completions, stream chunks and errors as OpenAI's exact JSON and SSE bytes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from modelway.core.pipeline import ChatRun, CompletedChoice, Completion
from modelway.core.types import ChoiceDelta, StreamEvent, ToolCall, Usage
from modelway.core.wording import Wording
from modelway.errors import REASONS, GatewayError, Reason

__all__ = ["OPENAI", "ChunkWriter", "OpenAIDialect", "completion_json", "error_json", "sse_done", "sse_event"]

_SSE_DONE = b"data: [DONE]\n\n"

_INVALID = "invalid_request_error"
# Reason -> (status, error `type`, error `code`), where OpenAI's own differ from the gateway's defaults.
_TABLE: Mapping[Reason, tuple[int, str, str | None]] = MappingProxyType(
    {
        **{
            reason: (info.http_status, _INVALID, reason.value)
            for reason, info in REASONS.items()
            if info.http_status in (400, 404, 409)
        },
        Reason.INVALID_BODY: (400, _INVALID, None),
        Reason.UPSTREAM_REJECTED: (400, _INVALID, None),
        **{
            reason: (401, "authentication_error", reason.value)
            for reason, info in REASONS.items()
            if info.http_status == 401
        },
        **{
            reason: (403, "permission_error", reason.value)
            for reason, info in REASONS.items()
            if info.http_status == 403
        },
        Reason.RATE_LIMITED: (429, "requests", Reason.RATE_LIMITED.value),
        Reason.GLOBAL_RATE_LIMITED: (429, "requests", Reason.GLOBAL_RATE_LIMITED.value),
        Reason.BUDGET_EXCEEDED: (429, "tokens", Reason.BUDGET_EXCEEDED.value),
        # OpenAI answers an empty balance with 429 insufficient_quota, not 402.
        Reason.INSUFFICIENT_CREDITS: (429, "insufficient_quota", "insufficient_quota"),
        **{
            reason: (info.http_status, "api_error", reason.value)
            for reason, info in REASONS.items()
            if info.http_status >= 500
        },
    }
)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


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


def _choice(choice: CompletedChoice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None, "annotations": []}
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in choice.tool_calls]
    logprobs = {"content": list(choice.logprobs), "refusal": None} if choice.logprobs else None
    return {"index": choice.index, "message": message, "logprobs": logprobs, "finish_reason": choice.finish_reason}


def completion_json(run_id: str, created: int, model: str, completion: Completion) -> bytes:
    """The `chat.completion` object of a non-streamed call."""
    return _dumps(
        {
            "id": "chatcmpl-" + run_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [_choice(choice) for choice in completion.choices],
            "usage": _usage(completion.usage),
            "service_tier": "default",
            # No system_fingerprint: OpenAI's schema allows a string or no field, never null.
        }
    )


def error_json(error: GatewayError) -> bytes:
    _, kind, code = _TABLE[error.reason]
    return _dumps({"error": {"message": error.message, "type": kind, "param": error.param, "code": code}})


def sse_event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


def sse_done() -> bytes:
    return _SSE_DONE


class ChunkWriter:
    """Turns one stream's events into `chat.completion.chunk` SSE frames.

    A choice's first chunk carries the role; with include_usage every chunk
    has `"usage": null` and a last chunk with empty choices carries the usage.
    """

    def __init__(self, run_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self._id = "chatcmpl-" + run_id
        self._created = created
        self._model = model
        self._include_usage = include_usage
        self._started: set[int] = set()

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
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
        logprobs = {"content": list(event.logprobs), "refusal": None} if event.logprobs else None
        choice = {"index": event.index, "delta": delta, "logprobs": logprobs, "finish_reason": event.finish_reason}
        return self._chunk([choice])

    def event(self, event: StreamEvent) -> bytes:
        """The frame for any stream event; b"" for the usage when it was not asked for."""
        if isinstance(event, Usage):
            return self._chunk([], event) if self._include_usage else b""
        return self.delta(event)

    def error(self, error: GatewayError) -> bytes:
        """A failure after the stream began: written into it, as OpenAI does."""
        return sse_event(error_json(error))

    def end(self) -> bytes:
        return _SSE_DONE


OPENAI_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Stream it (stream: true), or ask for fewer choices (n) or fewer tokens (max_tokens).",
)


class OpenAIDialect:
    """OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat)."""

    name = "openai"
    wording = OPENAI_WORDING
    stream_content_type = "text/event-stream"

    def status(self, error: GatewayError) -> int:
        return _TABLE[error.reason][0]

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        return self.status(error), error_json(error)

    def completion(self, run: ChatRun, completion: Completion) -> bytes:
        return completion_json(run.id, run.created, run.model, completion)

    def stream(self, run: ChatRun) -> ChunkWriter:
        return ChunkWriter(run.id, run.created, run.model, include_usage=run.request.include_usage)


OPENAI = OpenAIDialect()
