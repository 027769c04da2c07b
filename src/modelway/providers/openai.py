"""The OpenAI Chat Completions wire format, spoken by OpenAI and every OpenAI-compatible upstream."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FinishReason,
    FunctionTool,
    ImagePart,
    Message,
    StreamEvent,
    TextPart,
    ToolCallDelta,
    Usage,
)
from modelway.errors import GatewayError, Reason
from modelway.providers.base import HttpRequest, SseEvent, Upstream, account_error, clip, malformed, status_error

__all__ = [
    "OpenAITranslator",
    "chat_request_to_openai",
    "openai_error_to_gateway_error",
    "openai_finish_reason",
    "openai_http_error",
]

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    # The legacy function-calling name, and the spellings some compatible servers use.
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "model_length": "length",
    "max_tokens": "length",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "safety": "content_filter",
    "recitation": "content_filter",
}

# OpenAI says "maximum context length"; compatible servers word it their own way.
_CONTEXT_LENGTH = re.compile(
    r"maximum context length|context[ _]length[ _]exceeded|context window|prompt is too long"
    r"|reduce the length of the messages",
    re.IGNORECASE,
)
_CALLERS_FAULT_TYPES = frozenset({"invalid_request_error", "invalid_request", "BadRequestError", "not_found_error"})
_CREDENTIAL_TYPES = frozenset(
    {"authentication_error", "permission_error", "invalid_api_key", "insufficient_quota", "billing_hard_limit_reached"}
)


class OpenAITranslator:
    """One request to one OpenAI-compatible upstream, and the state of its answer stream."""

    def __init__(self, request: ChatRequest, upstream: Upstream) -> None:
        self._request = request
        self._upstream = upstream
        self._done = False  # `data: [DONE]` seen
        self._finished: set[int] = set()
        self._usage: Usage | None = None
        # Per (choice, tool call index): the call's id once known, and whether its name went out.
        self._call_ids: dict[tuple[int, int], str] = {}
        self._named: set[tuple[int, int]] = set()
        self._last_call: dict[int, int] = {}

    def request(self) -> HttpRequest:
        headers = {"Content-Type": "application/json"}
        if self._upstream.api_key:
            headers["Authorization"] = f"Bearer {self._upstream.api_key}"
        headers.update(self._upstream.headers)
        body = chat_request_to_openai(self._request, self._upstream.model)
        return HttpRequest(
            url=f"{self._upstream.base_url.rstrip('/')}/chat/completions",
            headers=headers,
            body=orjson.dumps(body),
            streaming=self._request.stream,
        )

    def json_body(self, body: bytes) -> Sequence[StreamEvent]:
        answer = _parse(body)
        _raise_reported_error(answer)
        choices = answer.get("choices")
        if not isinstance(choices, list):
            raise malformed("not an OpenAI chat completion")
        try:
            events: list[StreamEvent] = [
                self._message_to_delta(position, choice) for position, choice in enumerate(choices)
            ]
            usage = _usage(answer.get("usage"))
        except (AttributeError, TypeError, ValueError) as exc:
            raise malformed("not an OpenAI chat completion") from exc
        if usage is not None:
            events.append(usage)
        return events

    def sse_event(self, event: SseEvent) -> Sequence[StreamEvent]:
        if event.data.strip() == "[DONE]":
            self._done = True
            return []
        if self._done:
            return []
        chunk = _parse(event.data.encode())
        _raise_reported_error(chunk)
        try:
            usage = _usage(chunk.get("usage"))
            if usage is not None:
                # Servers that report usage on every chunk report running totals: the last one counts.
                self._usage = usage
            deltas = [self._chunk_choice_to_delta(choice) for choice in chunk.get("choices") or ()]
        except (AttributeError, TypeError, ValueError) as exc:
            raise malformed("not an OpenAI chat completion") from exc
        return [delta for delta in deltas if delta is not None]

    def end(self) -> Sequence[StreamEvent]:
        if not self._done and not self._finished.issuperset(range(max(self._request.n, 1))):
            raise GatewayError(
                Reason.PROVIDER_ERROR, "The upstream provider's stream ended before the answer did.", retryable=True
            )
        return [self._usage] if self._usage is not None else []

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return openai_http_error(status, headers, body)

    def _message_to_delta(self, position: int, choice: Any) -> ChoiceDelta:
        index = _index(choice.get("index"), position)
        message = choice.get("message") or {}
        calls = tuple(
            ToolCallDelta(
                index=call_index,
                id=call.get("id") or _new_call_id(),
                name=(call.get("function") or {}).get("name") or "",
                arguments=_arguments((call.get("function") or {}).get("arguments")),
            )
            for call_index, call in enumerate(message.get("tool_calls") or ())
        )
        raw_finish = choice.get("finish_reason")
        _raise_on_error_finish(raw_finish)
        # A whole answer is finished even when a server leaves the reason out.
        finish = openai_finish_reason(raw_finish) if raw_finish else ("tool_calls" if calls else "stop")
        return ChoiceDelta(
            index=index,
            content=_text(message.get("content")),
            tool_calls=calls,
            finish_reason=finish,
            logprobs=_logprobs(choice.get("logprobs")),
        )

    def _chunk_choice_to_delta(self, choice: Any) -> ChoiceDelta | None:
        index = _index(choice.get("index"), 0)
        delta = choice.get("delta") or {}
        raw_finish = choice.get("finish_reason")
        _raise_on_error_finish(raw_finish)
        finish = openai_finish_reason(raw_finish) if raw_finish else None
        if finish is not None:
            self._finished.add(index)
        calls = tuple(
            piece
            for position, call in enumerate(delta.get("tool_calls") or ())
            if (piece := self._tool_call_piece(index, position, call)) is not None
        )
        content = _text(delta.get("content"))
        logprobs = _logprobs(choice.get("logprobs"))
        if not (content or calls or finish or logprobs):
            return None  # a role-only opener, or an empty keep-alive chunk
        return ChoiceDelta(index=index, content=content, tool_calls=calls, finish_reason=finish, logprobs=logprobs)

    def _tool_call_piece(self, choice: int, position: int, call: Any) -> ToolCallDelta | None:
        """One streamed tool call fragment, with id and name only on the call's first piece.

        Some servers repeat id and name on every fragment, or (Gemini) leave out
        `index`: both are normalised here so callers see OpenAI's own shape.
        """
        function = call.get("function") or {}
        raw_id = call.get("id") or ""
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = self._guess_call_index(choice, position, raw_id)
        key = (choice, index)
        self._last_call[choice] = index
        call_id = ""
        if key not in self._call_ids:
            call_id = raw_id or _new_call_id()
            self._call_ids[key] = call_id
        name = ""
        if key not in self._named and function.get("name"):
            name = function["name"]
            self._named.add(key)
        arguments = _arguments(function.get("arguments"))
        if not (call_id or name or arguments):
            return None
        return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)

    def _guess_call_index(self, choice: int, position: int, call_id: str) -> int:
        """The index of a fragment sent without one: its id's call, a new call, or the call still streaming."""
        calls = {cid: i for (c, i), cid in self._call_ids.items() if c == choice}
        if call_id:
            return calls.get(call_id, len(calls))
        return self._last_call.get(choice, position)


_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o\d|gpt-5)")


def chat_request_to_openai(request: ChatRequest, model: str) -> dict[str, Any]:
    """The JSON body of POST /chat/completions: pass-through fields first, then every canonical one that is set."""
    body: dict[str, Any] = dict(request.extra)
    body["model"] = model
    body["messages"] = [_message_to_openai(message) for message in request.messages]
    if request.stream:
        body["stream"] = True
        # Always asked for: the gateway meters from it, whatever the caller asked.
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    # OpenAI's reasoning models refuse the deprecated max_tokens; other compatible servers know only it.
    cap_field = "max_completion_tokens" if _REASONING_MODEL.match(model) else "max_tokens"
    # request.top_k is left out: Chat Completions has no top_k, and OpenAI refuses a request that sends one.
    optional: dict[str, Any] = {
        cap_field: request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": request.n if request.n != 1 else None,
        "stop": list(request.stop) or None,
        "seed": request.seed,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": dict(request.logit_bias) or None,
        "logprobs": True if request.logprobs else None,
        "top_logprobs": request.top_logprobs,
        "user": request.user or None,
        "metadata": dict(request.metadata) or None,
        "reasoning_effort": request.reasoning_effort or None,
        "response_format": _response_format_to_openai(request),
    }
    if request.tools:
        optional["tools"] = [_tool_to_openai(tool) for tool in request.tools]
        choice = request.tool_choice
        if choice.mode == "function":
            optional["tool_choice"] = {"type": "function", "function": {"name": choice.function_name}}
        elif choice.mode != "auto":  # "auto" is what OpenAI does when tools are present
            optional["tool_choice"] = choice.mode
        if not request.parallel_tool_calls:
            optional["parallel_tool_calls"] = False
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def openai_finish_reason(reason: str) -> FinishReason:
    """An upstream finish_reason as ours; one we do not know means the model simply stopped."""
    return _FINISH_REASONS.get(reason, "stop")


def openai_http_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """An OpenAI-compatible error answer (any endpoint) as ours."""
    message, code = _error_message(body)
    return status_error(
        status, message, headers, context_length=_is_context_length(message, code), account=code in _CREDENTIAL_TYPES
    )


def openai_error_to_gateway_error(error: Any) -> GatewayError:
    """An error the upstream reported inside a 200 answer (a stream event or a JSON body) as ours."""
    if not isinstance(error, Mapping):
        error = {"message": str(error)}
    message = clip(str(error.get("message") or "unknown error"))
    kind = str(error.get("type") or "")
    code = error.get("code")
    # OpenRouter and vLLM put an HTTP status in `code`.
    status = code if isinstance(code, int) else 0
    if kind in _CREDENTIAL_TYPES or code in _CREDENTIAL_TYPES or status in (401, 402, 403):
        return account_error(status or 200)
    if _is_context_length(message, code):
        return GatewayError(Reason.CONTEXT_LENGTH_EXCEEDED, message, param="messages")
    if kind in _CALLERS_FAULT_TYPES or status in (400, 404, 413, 422):
        return GatewayError(Reason.UPSTREAM_REJECTED, message)
    return GatewayError(Reason.PROVIDER_ERROR, f"The upstream provider failed: {message}", retryable=True)


def _message_to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    parts = message.content
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        out["content"] = parts[0].text
    elif parts:
        out["content"] = [_part_to_openai(part) for part in parts]
    elif message.role == "assistant" and message.tool_calls:
        out["content"] = None  # what OpenAI itself returns for a message that only calls tools
    else:
        out["content"] = ""
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _part_to_openai(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}


def _tool_to_openai(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters:
        function["parameters"] = dict(tool.parameters)
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _response_format_to_openai(request: ChatRequest) -> dict[str, Any] | None:
    response_format = request.response_format
    if response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "json_object"}
    # OpenAI requires a name; a caller that gave none still means "this schema".
    schema: dict[str, Any] = {"name": response_format.name or "response"}
    if response_format.schema is not None:
        schema["schema"] = dict(response_format.schema)
    if response_format.strict:
        schema["strict"] = True
    return {"type": "json_schema", "json_schema": schema}


def _parse(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise malformed("not an OpenAI chat completion") from exc
    if not isinstance(value, dict):
        raise malformed("not an OpenAI chat completion")
    return value


def _raise_reported_error(answer: Mapping[str, Any]) -> None:
    if answer.get("error") is not None:
        raise openai_error_to_gateway_error(answer["error"])
    if answer.get("object") == "error":  # vLLM's shape: the error fields at the top level
        raise openai_error_to_gateway_error(answer)


def _raise_on_error_finish(reason: Any) -> None:
    # OpenRouter ends a choice that failed mid-generation with finish_reason "error".
    if reason == "error":
        raise GatewayError(
            Reason.PROVIDER_ERROR, "The upstream provider failed while generating the answer.", retryable=True
        )


def _index(value: Any, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("choice index")
    return value


def _text(content: Any) -> str:
    """Message content as text: a string, null, or (some servers) a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text") or "" for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise ValueError("content")


def _arguments(arguments: Any) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    # A few servers send the arguments as a JSON object rather than its text.
    return orjson.dumps(arguments).decode()


def _logprobs(logprobs: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(logprobs, dict):
        return ()
    return tuple(entry for entry in logprobs.get("content") or () if isinstance(entry, dict))


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise ValueError("usage")
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _new_call_id() -> str:
    # Callers match tool results to calls by id, so a server that sends none still needs one.
    return f"call_{uuid.uuid4().hex[:24]}"


def _error_message(body: bytes) -> tuple[str, Any]:
    """The upstream's own words and error code, from whatever error shape the server uses."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return clip(body.decode("utf-8", "replace")), None
    if isinstance(value, list) and value:  # Gemini's compatibility layer wraps the error in a list
        value = value[0]
    if not isinstance(value, dict):
        return clip(body.decode("utf-8", "replace")), None
    error = value.get("error", value)
    if isinstance(error, str):
        return clip(error), value.get("code")
    if isinstance(error, dict):
        return clip(str(error.get("message") or "")), error.get("code")
    return "", None


def _is_context_length(message: str, code: Any) -> bool:
    return code == "context_length_exceeded" or bool(_CONTEXT_LENGTH.search(message))
