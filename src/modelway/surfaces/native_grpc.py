"""The typed gateway-native API (modelway.v1.GenerateService): proto request in, proto answer out."""

from __future__ import annotations

from typing import Any

from modelway.core.pipeline import ChatRun, Completion
from modelway.core.types import ChatRequest, FinishReason, Usage
from modelway.errors import GatewayError, Reason
from modelway.surfaces.native import finish_reason, usage_json
from modelway.surfaces.native_request import parse_native_request
from modelway.v1 import generate_pb2

__all__ = ["generate_request_from_proto", "generate_response_proto", "summary_proto"]


def generate_request_from_proto(request: generate_pb2.GenerateRequest, *, stream: bool) -> ChatRequest:
    """The same checks and words as the REST body: the proto is read into the same fields."""
    data: dict[str, Any] = {"stream": stream}
    if request.model:
        data["model"] = request.model
    if request.system:
        data["system"] = request.system
    if request.options.HasField("temperature"):
        data["temperature"] = request.options.temperature
    if request.options.HasField("max_tokens"):
        data["max_tokens"] = request.options.max_tokens
    which = request.WhichOneof("input")
    if which is None:
        raise GatewayError(
            Reason.MISSING_REQUIRED_PARAMETER, "`prompt` or `messages` is required: the input to answer.", param="input"
        )
    if which == "messages":
        data["messages"] = [{"role": m.role, "content": m.content} for m in request.messages.messages]
        return parse_native_request(data, "chat")
    data["prompt"] = request.prompt
    return parse_native_request(data, "generate")


def _usage(run: ChatRun, usage: Usage) -> generate_pb2.GenerateUsage:
    return generate_pb2.GenerateUsage(**usage_json(run, usage))


def generate_response_proto(run: ChatRun, completion: Completion) -> generate_pb2.GenerateResponse:
    """The whole answer; built after `run.finish()`, when its credits are known."""
    choice = completion.choices[0] if completion.choices else None
    return generate_pb2.GenerateResponse(
        content=(choice.content or "") if choice else "",
        model=run.model,
        usage=_usage(run, completion.usage),
        finish_reason=finish_reason(choice.finish_reason if choice else None),
    )


def summary_proto(run: ChatRun, usage: Usage, reason: FinishReason | None) -> generate_pb2.StreamGenerateResponse:
    """A stream's last message; built after `run.finish()`."""
    return generate_pb2.StreamGenerateResponse(
        summary=generate_pb2.GenerateSummary(
            model=run.model, usage=_usage(run, usage), finish_reason=finish_reason(reason)
        )
    )
