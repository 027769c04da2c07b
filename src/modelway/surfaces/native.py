"""The gateway-native dialect (POST /api/v1/ai/chat, /generate, /embed): its JSON, SSE frames and error codes.

    answer   {"content", "model", "usage": {"input_tokens", "output_tokens", "total_tokens",
              "credits_used", "credits_remaining"}, "finishReason"}
    stream   data: {"text": "..."}  ...  data: {"usage": {...}, "finishReason": "..."}  data: [DONE]
             a failure after the first frame: data: {"error": "..."}  data: [DONE]
    error    {"error": {"code": "RATE_LIMITED", "message": "..."}}

Credits are shown in credits (the ledger keeps micro-credits), and
`credits_remaining` is the account's available balance once the call is
settled: so the answer and the usage frame are rendered after `finish`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from modelway.config import MICRO
from modelway.core.pipeline import ChatRun, Completion
from modelway.core.types import FinishReason, StreamEvent, Usage
from modelway.core.wording import Wording
from modelway.errors import REASONS, GatewayError, Reason

__all__ = [
    "NATIVE",
    "SERVICE_RETRY_AFTER",
    "NativeDialect",
    "NativeStreamWriter",
    "finish_reason",
    "usage_json",
    "with_retry_after",
]

# Reason -> (HTTP status, the API's error code). One table: every reason has a row.
_TABLE: Mapping[Reason, tuple[int, str]] = MappingProxyType(
    {
        **{reason: (400, "VALIDATION_ERROR") for reason, info in REASONS.items() if info.http_status == 400},
        Reason.INVALID_BODY: (400, "INVALID_BODY"),
        Reason.INPUT_TOO_LARGE: (400, "INPUT_TOO_LARGE"),
        Reason.CONTEXT_LENGTH_EXCEEDED: (400, "INPUT_TOO_LARGE"),
        # An unknown model is the caller's mistake in this API, not a missing resource.
        Reason.MODEL_NOT_FOUND: (400, "INVALID_MODEL"),
        **{reason: (401, "UNAUTHORIZED") for reason, info in REASONS.items() if info.http_status == 401},
        Reason.INSUFFICIENT_CREDITS: (402, "INSUFFICIENT_CREDITS"),
        **{reason: (403, "FORBIDDEN") for reason, info in REASONS.items() if info.http_status == 403},
        Reason.NOT_FOUND: (404, "NOT_FOUND"),
        Reason.API_KEY_NOT_FOUND: (404, "NOT_FOUND"),
        Reason.CONVERSATION_CHANGED: (409, "CONFLICT"),
        Reason.RATE_LIMITED: (429, "RATE_LIMITED"),
        Reason.GLOBAL_RATE_LIMITED: (429, "RATE_LIMITED"),
        Reason.BUDGET_EXCEEDED: (429, "BUDGET_EXCEEDED"),
        Reason.INTERNAL: (500, "INTERNAL_ERROR"),
        Reason.NOT_IMPLEMENTED: (501, "NOT_IMPLEMENTED"),
        Reason.PROVIDER_ERROR: (502, "PROVIDER_ERROR"),
        Reason.SERVICE_UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
        Reason.UPSTREAM_OVERLOADED: (503, "SERVICE_UNAVAILABLE"),
        Reason.STORE_UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
        Reason.SHARED_STATE_UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
        # The API documents no timeout code: an upstream too slow to answer is the provider's failure.
        Reason.UPSTREAM_TIMEOUT: (502, "PROVIDER_ERROR"),
        Reason.DEADLINE_EXCEEDED: (502, "PROVIDER_ERROR"),
    }
)

# Anthropic's words for why an answer ended (https://docs.anthropic.com/en/api/messages: stop_reason).
_FINISH: Mapping[FinishReason, str] = MappingProxyType(
    {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
)

# What a 503 tells the caller to wait when nothing more precise is known (the API documents 60 s).
SERVICE_RETRY_AFTER = 60.0

_DONE = b"data: [DONE]\n\n"


def finish_reason(reason: FinishReason | None) -> str:
    return _FINISH[reason or "stop"]


def _credits(micro: int) -> float:
    # Micro-credits are whole numbers: six decimals show them exactly, without float noise.
    return round(micro / MICRO, 6)


def usage_json(run: ChatRun, usage: Usage) -> dict[str, Any]:
    """The usage object, with the credits of a settled call."""
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "credits_used": _credits(run.credits_used),
        "credits_remaining": _credits(run.credits_remaining()),
    }


def _frame(value: Any) -> bytes:
    return b"data: " + orjson.dumps(value) + b"\n\n"


class NativeStreamWriter:
    """One stream's frames: text pieces as they come, then usage and [DONE].

    The usage frame is asked for once the call is settled (stream_answer
    commits the row as the Usage event arrives), so its credits are final.
    """

    def __init__(self, run: ChatRun) -> None:
        self._run = run
        self._finish: FinishReason | None = None

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, Usage):
            return _frame({"usage": usage_json(self._run, event), "finishReason": finish_reason(self._finish)})
        if event.finish_reason is not None:
            self._finish = event.finish_reason
        return _frame({"text": event.content}) if event.content else b""

    def error(self, error: GatewayError) -> bytes:
        return _frame({"error": error.message})

    def end(self) -> bytes:
        return _DONE


def _completion_reason(completion: Completion) -> FinishReason:
    return completion.choices[0].finish_reason if completion.choices else "stop"


NATIVE_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Stream it (stream: true) or lower max_tokens.",
)


class NativeDialect:
    """The gateway-native API: usage rows say "native"."""

    name = "native"
    wording = NATIVE_WORDING
    stream_content_type = "text/event-stream"

    def status(self, error: GatewayError) -> int:
        return _TABLE[error.reason][0]

    def code(self, error: GatewayError) -> str:
        return _TABLE[error.reason][1]

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        status, code = _TABLE[error.reason]
        return status, orjson.dumps({"error": {"code": code, "message": error.message}})

    def completion(self, run: ChatRun, completion: Completion) -> bytes:
        """The whole answer; render it after `run.finish()`, when its credits are known."""
        choice = completion.choices[0] if completion.choices else None
        return orjson.dumps(
            {
                "content": (choice.content or "") if choice else "",
                "model": run.model,
                "usage": usage_json(run, completion.usage),
                "finishReason": finish_reason(_completion_reason(completion)),
            }
        )

    def stream(self, run: ChatRun) -> NativeStreamWriter:
        return NativeStreamWriter(run)


NATIVE = NativeDialect()


def with_retry_after(error: GatewayError) -> GatewayError:
    """A 503 always tells the caller when to come back: its own Retry-After, or the documented 60 s."""
    if _TABLE[error.reason][0] == 503 and error.retry_after is None:
        error.retry_after = SERVICE_RETRY_AFTER
    return error
