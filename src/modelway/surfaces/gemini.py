"""The Gemini dialect: GenerateContentResponse JSON, `data: {json}\\r\\n\\r\\n` events and google.rpc errors.

Shapes follow https://ai.google.dev/api/generate-content (camelCase, as
Google's REST API prints them) and https://ai.google.dev/gemini-api/docs/troubleshooting
for errors: `{"error": {"code", "message", "status", "details"}}`. The same
dicts feed the native GeminiService (parsed into its typed messages), so the
REST and gRPC answers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from modelway.config import ModelConfig
from modelway.core.pipeline import ChatRun, CompletedChoice, Completion
from modelway.core.types import ChoiceDelta, FinishReason, StreamEvent, ToolCall, ToolCallAssembler, Usage
from modelway.core.wording import Wording
from modelway.errors import REASONS, GatewayError, Reason
from modelway.providers.gemini import FINISH_REASON_TO_GEMINI

__all__ = [
    "GEMINI",
    "GEMINI_ARRAY",
    "GeminiArrayWriter",
    "GeminiChunks",
    "GeminiDialect",
    "GeminiStreamWriter",
    "completion_dict",
    "error_json",
    "model_dict",
]

# google.rpc.Code names for each HTTP status we answer (Google's own pairs:
# https://cloud.google.com/apis/design/errors#handling_errors).
_STATUS_NAMES: Mapping[int, str] = MappingProxyType(
    {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ABORTED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        501: "UNIMPLEMENTED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
)
# Reason -> (HTTP status, google.rpc status): the reason's own status, except that an empty
# balance is quota, which Google reports as 429 RESOURCE_EXHAUSTED (it has no 402).
_TABLE: Mapping[Reason, tuple[int, str]] = MappingProxyType(
    {
        **{
            reason: (info.http_status, _STATUS_NAMES.get(info.http_status, "UNKNOWN"))
            for reason, info in REASONS.items()
        },
        Reason.INSUFFICIENT_CREDITS: (429, "RESOURCE_EXHAUSTED"),
    }
)
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_METHODS = ("generateContent", "streamGenerateContent")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def error_dict(error: GatewayError) -> dict[str, Any]:
    status, name = _TABLE[error.reason]
    info: dict[str, Any] = {"@type": _ERROR_INFO, "reason": error.reason.name, "domain": "modelway"}
    if error.param:
        info["metadata"] = {"field": error.param}
    details: list[dict[str, Any]] = [info]
    retry_after = error.retry_after_header
    if retry_after is not None:
        details.append({"@type": _RETRY_INFO, "retryDelay": f"{retry_after}s"})
    return {"error": {"code": status, "message": error.message, "status": name, "details": details}}


def error_json(error: GatewayError) -> bytes:
    return _dumps(error_dict(error))


def _args(arguments: str) -> Any:
    """A call's JSON arguments as the object Gemini sends; {} when they were cut short (MAX_TOKENS)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_part(call: ToolCall) -> dict[str, Any]:
    return {"functionCall": {"id": call.id, "name": call.name, "args": _args(call.arguments)}}


def _content(parts: list[dict[str, Any]]) -> dict[str, Any]:
    # An answer with nothing in it (cut at once by MAX_TOKENS) has a role and no parts, as Gemini's.
    return {"parts": parts, "role": "model"} if parts else {"role": "model"}


def _candidate(index: int, parts: list[dict[str, Any]], finish: FinishReason | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": _content(parts)}
    if finish is not None:
        candidate["finishReason"] = FINISH_REASON_TO_GEMINI[finish]
    candidate["index"] = index
    return candidate


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens,
        "totalTokenCount": usage.total_tokens,
    }


def _choice_parts(choice: CompletedChoice) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": choice.content}] if choice.content else []
    return parts + [_call_part(call) for call in choice.tool_calls]


def completion_dict(run: ChatRun, completion: Completion) -> dict[str, Any]:
    """A whole GenerateContentResponse."""
    return {
        "candidates": [
            _candidate(choice.index, _choice_parts(choice), choice.finish_reason) for choice in completion.choices
        ],
        "usageMetadata": _usage(completion.usage),
        "modelVersion": run.model,
        "responseId": run.id,
    }


class GeminiChunks:
    """One stream's GenerateContentResponse pieces, as dicts.

    Text goes out as it comes. Function calls arrive from upstreams in
    pieces but Gemini sends each whole (`args` is an object): they are
    held, and go out with their candidate's finish reason in the last
    piece, which also carries usageMetadata.
    """

    def __init__(self, run: ChatRun) -> None:
        self._run = run
        self._calls: dict[int, ToolCallAssembler] = {}  # by candidate
        self._finished: dict[int, FinishReason] = {}

    def _piece(self, candidates: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        piece: dict[str, Any] = {"candidates": candidates} if candidates else {}
        if usage is not None:
            piece["usageMetadata"] = _usage(usage)
        piece["modelVersion"] = self._run.model
        piece["responseId"] = self._run.id
        return piece

    def chunk(self, event: StreamEvent) -> dict[str, Any] | None:
        """The piece for one event; None when it is held for later."""
        if isinstance(event, Usage):
            return self._piece([self._last(index) for index in sorted(self._finished)], event)
        return self._delta(event)

    def _delta(self, event: ChoiceDelta) -> dict[str, Any] | None:
        self._calls.setdefault(event.index, ToolCallAssembler()).add(event.tool_calls)
        if event.finish_reason is not None:
            self._finished[event.index] = event.finish_reason
        if not event.content:
            return None
        return self._piece([_candidate(event.index, [{"text": event.content}], None)])

    def _last(self, index: int) -> dict[str, Any]:
        assembled = self._calls.get(index)
        calls = assembled.calls() if assembled is not None else ()
        # Gemini's last piece of a text answer carries an empty text part beside the finish reason.
        parts = [_call_part(call) for call in calls] or [{"text": ""}]
        return _candidate(index, parts, self._finished[index])


def _sse(value: dict[str, Any]) -> bytes:
    # Google's server-sent events end each event with CRLF CRLF.
    return b"data: " + _dumps(value) + b"\r\n\r\n"


class GeminiArrayWriter:
    """streamGenerateContent without `alt=sse`: one JSON array, written as it grows.

    Google's own framing: `[` before the first response, `\r\n,\r\n`
    between responses, `\r\n]` at the end, with Content-Type
    application/json; the whole body is one valid JSON document. A failure
    after the array began is its last element, an `{"error": ...}` object,
    and the array is still closed: a client reading the array whole, or
    element by element, finds the error where the answer stopped.
    """

    def __init__(self, run: ChatRun) -> None:
        self._chunks = GeminiChunks(run)
        self._opened = False
        self._elements = 0

    def _element(self, value: dict[str, Any] | None) -> bytes:
        head = b"" if self._opened else b"["
        self._opened = True
        if value is None:
            # The array is opened at once even when the first event shows nothing (a held function
            # call): the response's first message fixes its content type.
            return head
        head += b"\r\n,\r\n" if self._elements else b""
        self._elements += 1
        return head + _dumps(value)

    def event(self, event: StreamEvent) -> bytes:
        return self._element(self._chunks.chunk(event))

    def error(self, error: GatewayError) -> bytes:
        return self._element(error_dict(error))

    def end(self) -> bytes:
        return (b"" if self._opened else b"[") + (b"\r\n]" if self._elements else b"]")


class GeminiStreamWriter:
    """streamGenerateContent?alt=sse frames; no terminator; a failure is an `{"error": ...}` event."""

    def __init__(self, run: ChatRun) -> None:
        self._chunks = GeminiChunks(run)

    def event(self, event: StreamEvent) -> bytes:
        piece = self._chunks.chunk(event)
        return b"" if piece is None else _sse(piece)

    def error(self, error: GatewayError) -> bytes:
        # The google-genai SDK raises its APIError for an event that is an error object.
        return _sse(error_dict(error))

    def end(self) -> bytes:
        return b""


def model_dict(model: ModelConfig) -> dict[str, Any]:
    """A catalog model as a Gemini Model resource (https://ai.google.dev/api/models#Model)."""
    body: dict[str, Any] = {"name": f"models/{model.id}", "version": "1", "displayName": model.id}
    if model.context_length is not None:
        body["inputTokenLimit"] = model.context_length
    body["outputTokenLimit"] = model.max_output_tokens
    body["supportedGenerationMethods"] = list(_METHODS)
    return body


GEMINI_WORDING = Wording(
    send_key="Send it in the 'x-goog-api-key' header or as the 'key' query parameter (?key=YOUR_KEY).",
    spend_less="Add credits or lower generationConfig.maxOutputTokens.",
    answer_smaller=(
        "Stream it (streamGenerateContent), or ask for fewer candidates (candidateCount) or fewer tokens "
        "(maxOutputTokens)."
    ),
)
# The typed GeminiService: a gRPC call has no query string; the key goes in its metadata.
GEMINI_GRPC_WORDING = Wording(
    send_key="Send it as 'x-goog-api-key' or 'authorization: Bearer YOUR_KEY' metadata.",
    spend_less=GEMINI_WORDING.spend_less,
    answer_smaller=(
        "Use StreamGenerateContent, or ask for fewer candidates (candidate_count) or fewer tokens (max_output_tokens)."
    ),
)


class GeminiDialect:
    """The Gemini API (https://ai.google.dev/api). Streams are server-sent events (`?alt=sse`), or with
    `array` one JSON array (streamGenerateContent without `alt=sse`, Google's default)."""

    name = "gemini"

    def __init__(self, *, array: bool = False, wording: Wording = GEMINI_WORDING) -> None:
        self._array = array
        self.wording = wording
        self.stream_content_type = "application/json" if array else "text/event-stream"

    def status(self, error: GatewayError) -> int:
        return _TABLE[error.reason][0]

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        return self.status(error), error_json(error)

    def completion(self, run: ChatRun, completion: Completion) -> bytes:
        return _dumps(completion_dict(run, completion))

    def stream(self, run: ChatRun) -> GeminiStreamWriter | GeminiArrayWriter:
        return GeminiArrayWriter(run) if self._array else GeminiStreamWriter(run)


GEMINI = GeminiDialect()
GEMINI_ARRAY = GeminiDialect(array=True)
# The typed GeminiService: the same rows, statuses and errors, its own words for sending a key.
GEMINI_GRPC = GeminiDialect(wording=GEMINI_GRPC_WORDING)
