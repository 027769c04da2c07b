"""The Google Gemini API wire format (generativelanguage v1beta generateContent / streamGenerateContent)."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
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
from modelway.providers.base import HttpRequest, SseEvent, Upstream, malformed, status_error
from modelway.providers.helpers import arguments_object, data_url

__all__ = [
    "FINISH_REASON_TO_GEMINI",
    "GeminiTranslator",
    "chat_request_to_gemini",
    "gemini_error_to_gateway",
    "gemini_model_path",
]

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
# google.rpc.Code names that mean the caller sent something the model will never accept.
_CALLER_FAULT = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "OUT_OF_RANGE"})
_TRANSIENT = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED", "UNKNOWN"})
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".pdf": "application/pdf",
}
# Gemini's OpenAI-compatible endpoint maps reasoning_effort to these thinking budgets.
_THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# Gemini 3 refuses replayed function calls without the model's opaque thought signature,
# which the canonical ToolCall cannot carry; Google documents this value for such history.
_SKIP_SIGNATURE = "skip_thought_signature_validator"
_CONTEXT_WORDS = re.compile(
    r"input token count.*exceeds|exceeds the maximum number of tokens|context (window|length)|too many tokens",
    re.IGNORECASE | re.DOTALL,
)


class GeminiTranslator:
    """One chat request to one Gemini upstream, and the state of its answer stream."""

    def __init__(self, request: ChatRequest, upstream: Upstream) -> None:
        self._request = request
        self._upstream = upstream
        self._body = orjson.dumps(chat_request_to_gemini(request))
        # Candidate index -> its function calls so far; the keys are the candidates seen.
        self._calls: dict[int, int] = {}
        self._finished: set[int] = set()
        self._usage: Usage | None = None

    def request(self) -> HttpRequest:
        method = "streamGenerateContent?alt=sse" if self._request.stream else "generateContent"
        url = f"{_api_root(self._upstream.base_url)}/{gemini_model_path(self._upstream.model)}:{method}"
        headers = {"x-goog-api-key": self._upstream.api_key, "content-type": "application/json"}
        headers.update(self._upstream.headers)
        return HttpRequest(url=url, headers=headers, body=self._body, streaming=self._request.stream)

    def json_body(self, body: bytes) -> Sequence[StreamEvent]:
        answer = _load(body)
        if isinstance(answer, list):
            # streamGenerateContent without alt=sse answers a JSON array of chunks.
            return [event for chunk in answer for event in self._chunk_events(chunk)] + list(self.end())
        events: list[StreamEvent] = list(self._chunk_events(answer))
        if not self._calls:
            raise GatewayError(
                Reason.PROVIDER_ERROR, "The upstream provider answered without any candidate.", retryable=True
            )
        if self._usage is not None:
            events.append(self._usage)
        return events

    def sse_event(self, event: SseEvent) -> Sequence[StreamEvent]:
        if event.data.strip() in ("", "[DONE]"):
            return []
        return self._chunk_events(_load(event.data.encode()))

    def end(self) -> Sequence[StreamEvent]:
        if not self._calls or set(self._calls) - self._finished:
            raise GatewayError(
                Reason.PROVIDER_ERROR,
                "The upstream provider's stream ended before the answer was complete.",
                retryable=True,
            )
        return [self._usage] if self._usage is not None else []

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return gemini_error_to_gateway(status, headers, body)

    def _chunk_events(self, chunk: Any) -> list[StreamEvent]:
        """One GenerateContentResponse (a whole answer or a stream chunk) -> deltas; remembers usage."""
        if not isinstance(chunk, dict):
            raise malformed("an answer is not a JSON object")
        if "error" in chunk:
            raise _embedded_error(chunk["error"])
        try:
            candidates = chunk.get("candidates") or []
            usage = chunk.get("usageMetadata")
            if usage is not None:
                self._usage = _usage_from_gemini(usage)
            if not candidates:
                block = (chunk.get("promptFeedback") or {}).get("blockReason")
                if block:
                    raise GatewayError(
                        Reason.UPSTREAM_REJECTED, f"The upstream provider blocked the prompt (blockReason {block})."
                    )
                return []
            response_id = str(chunk.get("responseId") or "")
            return [
                delta
                for position, candidate in enumerate(candidates)
                if (delta := self._candidate_delta(candidate, position, response_id)) is not None
            ]
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise malformed(f"unexpected shape ({exc})") from exc

    def _candidate_delta(self, candidate: Any, position: int, response_id: str) -> ChoiceDelta | None:
        index = int(candidate.get("index", position))
        first_call = self._calls.setdefault(index, 0)
        text: list[str] = []
        calls: list[ToolCallDelta] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if "text" in part:
                text.append(str(part["text"]))
            call = part.get("functionCall")
            if call is not None:
                number = first_call + len(calls)
                name = str(call["name"])
                calls.append(
                    ToolCallDelta(
                        index=number,
                        id=str(call.get("id") or "") or _call_id(response_id, index, number, name),
                        name=name,
                        arguments=orjson.dumps(call.get("args") or {}).decode(),
                    )
                )
        self._calls[index] = first_call + len(calls)
        finish: FinishReason | None = None
        raw_finish = candidate.get("finishReason")
        if raw_finish and index not in self._finished:
            self._finished.add(index)
            finish = _finish_reason(str(raw_finish), made_calls=self._calls[index] > 0)
        logprobs = _logprobs_to_openai(candidate.get("logprobsResult"))
        content = "".join(text)
        if not content and not calls and finish is None and not logprobs:
            return None
        return ChoiceDelta(
            index=index, content=content, tool_calls=tuple(calls), finish_reason=finish, logprobs=logprobs
        )


def gemini_model_path(model: str) -> str:
    """The model's resource name for the URL path: "models/<id>", or a tuned model's own name."""
    name = model.removeprefix("models/")
    resource = name if "/" in name else f"models/{name}"
    return urllib.parse.quote(resource, safe="/")


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    # An operator may configure the versioned root itself; the version is not doubled.
    return root if root.endswith(("/v1beta", "/v1")) else f"{root}/v1beta"


def chat_request_to_gemini(request: ChatRequest) -> dict[str, Any]:
    """Our ChatRequest as a GenerateContentRequest body; raises INVALID_VALUE for what Gemini cannot express."""
    if request.logit_bias:
        raise GatewayError(Reason.INVALID_VALUE, "Gemini models do not support logit_bias.", param="logit_bias")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names = {call.id: call.name for m in request.messages for call in m.tool_calls if call.id}
    for message in request.messages:
        if message.role in ("system", "developer"):
            if any(isinstance(part, ImagePart) for part in message.content):
                raise GatewayError(
                    Reason.INVALID_VALUE, "Gemini takes only text in system instructions.", param="messages"
                )
            if message.text:
                system.append({"text": message.text})
            continue
        role, parts = _message_to_gemini(message, call_names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise GatewayError(
            Reason.INVALID_VALUE, "Gemini needs at least one user or assistant message.", param="messages"
        )
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_function_declaration(tool) for tool in request.tools]}]
        body["toolConfig"] = {"functionCallingConfig": _function_calling_config(request)}
    elif request.tool_choice.mode in ("required", "function"):
        raise GatewayError(
            Reason.INVALID_VALUE, "tool_choice requires a tool call but the request has no tools.", param="tool_choice"
        )
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


def _message_to_gemini(message: Message, call_names: Mapping[str, str]) -> tuple[str, list[dict[str, Any]]]:
    if message.role in ("tool", "function"):
        name = call_names.get(message.tool_call_id) or message.name
        if not name:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"The tool message for tool_call_id {message.tool_call_id!r} matches no earlier assistant tool call; "
                "Gemini needs the function's name.",
                param="messages",
            )
        return "user", [{"functionResponse": {"name": name, "response": _tool_result(message.text)}}]
    if message.role == "assistant":
        parts: list[dict[str, Any]] = [{"text": part.text} for part in message.content if isinstance(part, TextPart)]
        parts = [part for part in parts if part["text"]]
        for number, call in enumerate(message.tool_calls):
            part: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": arguments_object(call.arguments, "messages")}
            }
            if number == 0:
                part["thoughtSignature"] = _SKIP_SIGNATURE
            parts.append(part)
        return "model", parts
    user_parts: list[dict[str, Any]] = []
    for content in message.content:
        if isinstance(content, TextPart):
            if content.text:
                user_parts.append({"text": content.text})
        else:
            user_parts.append(_image_to_gemini(content.url))
    return "user", user_parts


def _tool_result(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    # functionResponse.response is a Struct: anything but an object is wrapped.
    return value if isinstance(value, dict) else {"result": text}


def _image_to_gemini(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media, data = data_url(url, "messages")
        return {"inlineData": {"mimeType": media, "data": data}}
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "gs"):
        raise GatewayError(Reason.INVALID_VALUE, "Image URLs must be data:, http: or https: URLs.", param="messages")
    path = urllib.parse.urlsplit(url).path.lower()
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    return {"fileData": {"mimeType": _IMAGE_TYPES.get(suffix, "image/jpeg"), "fileUri": url}}


def _function_declaration(tool: FunctionTool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.parameters:
        # parametersJsonSchema takes full JSON Schema (additionalProperties, $defs, ...), which
        # the OpenAPI-subset `parameters` field rejects.
        declaration["parametersJsonSchema"] = dict(tool.parameters)
    return declaration


def _function_calling_config(request: ChatRequest) -> dict[str, Any]:
    choice = request.tool_choice
    if choice.mode == "none":
        return {"mode": "NONE"}
    if choice.mode == "required":
        return {"mode": "ANY"}
    if choice.mode == "function":
        if choice.function_name not in {tool.name for tool in request.tools}:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"tool_choice names an unknown function {choice.function_name!r}.",
                param="tool_choice",
            )
        return {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    return {"mode": "AUTO"}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.n != 1:
        config["candidateCount"] = request.n
    if request.seed is not None:
        config["seed"] = request.seed
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs is not None:
            config["logprobs"] = request.top_logprobs
    response_format = request.response_format
    if response_format.type in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        if response_format.type == "json_schema" and response_format.schema is not None:
            config["responseJsonSchema"] = dict(response_format.schema)
    effort = request.reasoning_effort.lower()
    if effort:
        if effort not in _THINKING_BUDGETS:
            raise GatewayError(
                Reason.INVALID_VALUE, f"Unsupported reasoning_effort {effort!r}.", param="reasoning_effort"
            )
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGETS[effort]}
    return config


# Our finish reasons in Gemini's words (the inverse of _finish_reason): Gemini ends a turn of
# function calls with STOP, and reports every content filter as its own reason (SAFETY the general one).
FINISH_REASON_TO_GEMINI: Mapping[FinishReason, str] = MappingProxyType(
    {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
)


def _finish_reason(raw: str, *, made_calls: bool) -> FinishReason:
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if made_calls else "stop"


def _call_id(response_id: str, candidate: int, position: int, name: str) -> str:
    # Gemini API calls usually come without ids; this one is stable for the same answer.
    seed = f"{response_id}|{candidate}|{position}|{name}".encode()
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def _usage_from_gemini(usage: Any) -> Usage:
    prompt = int(usage.get("promptTokenCount") or 0) + int(usage.get("toolUsePromptTokenCount") or 0)
    completion = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _logprobs_to_openai(result: Any) -> tuple[Mapping[str, Any], ...]:
    """A candidate's logprobsResult as OpenAI `logprobs.content` entries."""
    if not result:
        return ()
    top = result.get("topCandidates") or []
    entries: list[Mapping[str, Any]] = []
    for step, chosen in enumerate(result.get("chosenCandidates") or []):
        alternatives = (top[step].get("candidates") or []) if step < len(top) else []
        entries.append({**_logprob(chosen), "top_logprobs": [_logprob(item) for item in alternatives]})
    return tuple(entries)


def _logprob(item: Any) -> dict[str, Any]:
    token = str(item.get("token", ""))
    return {"token": token, "logprob": float(item.get("logProbability", 0.0)), "bytes": list(token.encode())}


def _load(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise malformed("not JSON") from exc


def _embedded_error(error: Any) -> GatewayError:
    """An error object inside a 200 body or a stream event."""
    if not isinstance(error, dict):
        return GatewayError(Reason.PROVIDER_ERROR, f"The upstream provider failed: {error}", retryable=True)
    message = str(error.get("message") or "unknown error")
    status = str(error.get("status") or "")
    code = error.get("code")
    if status in _CALLER_FAULT or (not status and code in (400, 404)):
        if _CONTEXT_WORDS.search(message):
            return GatewayError(Reason.CONTEXT_LENGTH_EXCEEDED, message, param="messages")
        return GatewayError(Reason.UPSTREAM_REJECTED, message)
    transient = status in _TRANSIENT or (isinstance(code, int) and (code == 429 or code >= 500))
    return GatewayError(Reason.PROVIDER_ERROR, f"The upstream provider failed: {message}", retryable=transient)


def gemini_error_to_gateway(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """A Gemini HTTP error answer ({"error": {"code", "message", "status", "details"}}) as ours."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    # Errors of the array-framed stream come as a one-element array.
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return status_error(status, body.decode(errors="replace"), headers)
    message = str(error.get("message") or "")
    details = [item for item in error.get("details") or [] if isinstance(item, dict)]
    if any(item.get("reason") == "API_KEY_INVALID" for item in details):
        # Google answers a bad key with 400 INVALID_ARGUMENT: the operator's problem, not the caller's.
        status = 401
    delay = _retry_delay(details)
    lowered = {name.lower() for name in headers}
    if delay is not None and "retry-after" not in lowered and "retry-after-ms" not in lowered:
        headers = {**headers, "retry-after": delay}
    return status_error(status, message, headers, context_length=bool(_CONTEXT_WORDS.search(message)))


def _retry_delay(details: Iterable[Mapping[str, Any]]) -> str | None:
    """google.rpc.RetryInfo's retryDelay ("33s", "1.5s") in seconds, as header text."""
    for item in details:
        if str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(item.get("retryDelay", ""))
            if delay.endswith("s"):
                try:
                    return str(float(delay[:-1]))
                except ValueError:
                    return None
    return None
