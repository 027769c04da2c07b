"""Tests for the gateway-native dialect: error codes and statuses, the answer's JSON and the stream's frames."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from modelway.core.pipeline import CompletedChoice, Completion
from modelway.core.types import ChoiceDelta, Usage
from modelway.errors import REASONS, GatewayError, Reason
from modelway.surfaces.native import NATIVE, NativeStreamWriter, finish_reason, with_retry_after


@dataclass
class SettledRun:
    """What the dialect reads of a settled ChatRun: the model, the charge and the balance (micro-credits)."""

    model: str = "echo-1"
    credits_used: int = 16_000
    balance: int = 9_984_000

    def credits_remaining(self) -> int:
        return self.balance


DOCUMENTED = {
    Reason.INVALID_BODY: (400, "INVALID_BODY"),
    Reason.INVALID_TYPE: (400, "VALIDATION_ERROR"),
    Reason.MISSING_REQUIRED_PARAMETER: (400, "VALIDATION_ERROR"),
    Reason.DECIMAL_ABOVE_MAX: (400, "VALIDATION_ERROR"),
    Reason.INPUT_TOO_LARGE: (400, "INPUT_TOO_LARGE"),
    Reason.CONTEXT_LENGTH_EXCEEDED: (400, "INPUT_TOO_LARGE"),
    Reason.MODEL_NOT_FOUND: (400, "INVALID_MODEL"),
    Reason.INVALID_API_KEY: (401, "UNAUTHORIZED"),
    Reason.MISSING_API_KEY: (401, "UNAUTHORIZED"),
    Reason.INSUFFICIENT_CREDITS: (402, "INSUFFICIENT_CREDITS"),
    Reason.PERMISSION_DENIED: (403, "FORBIDDEN"),
    Reason.MODEL_NOT_ALLOWED: (403, "FORBIDDEN"),
    Reason.RATE_LIMITED: (429, "RATE_LIMITED"),
    Reason.GLOBAL_RATE_LIMITED: (429, "RATE_LIMITED"),
    Reason.BUDGET_EXCEEDED: (429, "BUDGET_EXCEEDED"),
    Reason.NOT_IMPLEMENTED: (501, "NOT_IMPLEMENTED"),
    Reason.PROVIDER_ERROR: (502, "PROVIDER_ERROR"),
    Reason.SERVICE_UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
    Reason.UPSTREAM_OVERLOADED: (503, "SERVICE_UNAVAILABLE"),
}


@pytest.mark.parametrize(("reason", "expected"), DOCUMENTED.items())
def test_documented_codes_and_statuses(reason: Reason, expected: tuple[int, str]) -> None:
    status, body = NATIVE.error_response(GatewayError(reason, "Why it failed."))
    assert (status, json.loads(body)) == (expected[0], {"error": {"code": expected[1], "message": "Why it failed."}})


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_code_and_never_a_5xx_for_a_4xx_reason(reason: Reason) -> None:
    status, body = NATIVE.error_response(GatewayError(reason, "m"))
    assert (status >= 500) == (REASONS[reason].http_status >= 500)
    assert json.loads(body)["error"]["code"].isupper()


def test_a_503_always_has_a_retry_after() -> None:
    assert with_retry_after(GatewayError(Reason.SERVICE_UNAVAILABLE, "m")).retry_after == 60
    assert with_retry_after(GatewayError(Reason.SERVICE_UNAVAILABLE, "m", retry_after=3)).retry_after == 3
    assert with_retry_after(GatewayError(Reason.RATE_LIMITED, "m")).retry_after is None


def test_finish_reasons_in_anthropic_words() -> None:
    assert [finish_reason(r) for r in ("stop", "length", "tool_calls", "content_filter", None)] == [
        "end_turn",
        "max_tokens",
        "tool_use",
        "refusal",
        "end_turn",
    ]


def test_completion_json_exact_bytes() -> None:
    completion = Completion(
        choices=(CompletedChoice(index=0, content="Echo: hi", tool_calls=(), finish_reason="length"),),
        usage=Usage(prompt_tokens=8, completion_tokens=4),
    )
    assert NATIVE.completion(SettledRun(), completion) == (  # type: ignore[arg-type]
        b'{"content":"Echo: hi","model":"echo-1","usage":{"input_tokens":8,"output_tokens":4,"total_tokens":12,'
        b'"credits_used":0.016,"credits_remaining":9.984},"finishReason":"max_tokens"}'
    )


def test_stream_frames_then_usage_then_done() -> None:
    # The usage frame is asked for once the call is settled (stream_answer commits the row first).
    writer = NativeStreamWriter(SettledRun(credits_used=1, balance=0))  # type: ignore[arg-type]
    assert writer.event(ChoiceDelta(index=0, content="")) == b""
    assert writer.event(ChoiceDelta(index=0, content='He said "hi"\n')) == b'data: {"text":"He said \\"hi\\"\\n"}\n\n'
    assert writer.event(ChoiceDelta(index=0, finish_reason="stop")) == b""
    assert writer.event(Usage(3, 2)) == (
        b'data: {"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5,"credits_used":1e-6,'
        b'"credits_remaining":0.0},"finishReason":"end_turn"}\n\n'
    )
    assert writer.end() == b"data: [DONE]\n\n"


def test_stream_failure_is_an_error_frame_then_done() -> None:
    writer = NativeStreamWriter(SettledRun())  # type: ignore[arg-type]
    writer.event(ChoiceDelta(index=0, content="one"))
    assert writer.error(GatewayError(Reason.PROVIDER_ERROR, "The upstream failed.")) == (
        b'data: {"error":"The upstream failed."}\n\n'
    )
    assert writer.end() == b"data: [DONE]\n\n"
