"""Validates an OpenAI chat request (as the transcoder parsed it) into a ChatRequest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from google.protobuf import json_format, struct_pb2

from modelway.core.types import (
    ChatRequest,
    ContentPart,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    TextPart,
    ToolCall,
    ToolChoice,
)
from modelway.errors import InvalidRequest
from modelway.proto_util import optional
from modelway.v1 import chat_pb2

__all__ = ["to_chat_request"]

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_STOP = 4
_TOKEN_ID = re.compile(r"[0-9]+")


def _invalid_value(param: str, value: object, allowed: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value: {value!r}. Supported values are: {allowed}.", param=param)


def _check_range(param: str, value: float | None, low: float, high: float) -> None:
    if value is None or low <= value <= high:
        return
    kind = "integer" if isinstance(value, int) else "decimal"
    side, relation, bound = ("below", ">=", low) if value < low else ("above", "<=", high)
    raise InvalidRequest(
        f"Invalid '{param}': {kind} {side} {'minimum' if side == 'below' else 'maximum'} value. "
        f"Expected a value {relation} {bound:g}, but got {value:g} instead.",
        param=param,
        code=f"{kind}_{side}_{'min' if side == 'below' else 'max'}_value",
    )


def _value(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as plain JSON data; None when absent or null."""
    if value.WhichOneof("kind") is None:
        return None
    return json_format.MessageToDict(value)


def _integral(value: Any) -> Any:
    """Struct keeps every JSON number as a double; schemas mean 1, not 1.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _integral(json_format.MessageToDict(struct))
    return result


def _content(raw: Any, param: str, role: str) -> tuple[ContentPart, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (TextPart(raw),)
    if not isinstance(raw, list):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected a string or an array of content parts.",
            param=param,
            code="invalid_type",
        )
    parts: list[ContentPart] = []
    for index, part in enumerate(raw):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            image = image if isinstance(image, dict) else {}
            url = image.get("url")
            if not isinstance(url, str) or not url:
                raise InvalidRequest(
                    f"Missing required parameter: '{where}.image_url.url'.", param=f"{where}.image_url.url"
                )
            parts.append(ImagePart(url=url, detail=str(image.get("detail", "auto"))))
        elif kind == "text":
            raise InvalidRequest(f"Missing required parameter: '{where}.text'.", param=f"{where}.text")
        else:
            allowed = "'text', 'image_url'" if role == "user" else "'text'"
            raise _invalid_value(f"{where}.type", kind, allowed)
    return tuple(parts)


def _message(message: chat_pb2.ChatMessage, index: int) -> Message:
    param = f"messages[{index}]"
    if not message.role:
        raise InvalidRequest(
            f"Missing required parameter: '{param}.role'.", param=f"{param}.role", code="missing_required_parameter"
        )
    if message.role not in _ROLES:
        raise _invalid_value(f"{param}.role", message.role, ", ".join(f"'{r}'" for r in _ROLES))
    role = cast(Role, message.role)
    content = _content(_value(message.content), f"{param}.content", role)
    calls = tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments) for call in message.tool_calls
    )
    if message.HasField("function_call"):
        calls += (ToolCall(id="", name=message.function_call.name, arguments=message.function_call.arguments),)
    if role == "tool" and not message.tool_call_id:
        raise InvalidRequest(
            f"Missing required parameter: '{param}.tool_call_id'.",
            param=f"{param}.tool_call_id",
            code="missing_required_parameter",
        )
    if not content and not calls and role != "assistant":
        raise InvalidRequest(
            f"Missing required parameter: '{param}.content'.",
            param=f"{param}.content",
            code="missing_required_parameter",
        )
    return Message(role=role, content=content, name=message.name, tool_calls=calls, tool_call_id=message.tool_call_id)


def _tools(request: chat_pb2.CreateChatCompletionRequest) -> tuple[FunctionTool, ...]:
    tools: list[FunctionTool] = []
    for index, tool in enumerate(request.tools):
        if tool.type != "function":
            raise _invalid_value(f"tools[{index}].type", tool.type, "'function'")
        tools.append(_function(tool.function, f"tools[{index}].function"))
    for index, function in enumerate(request.functions):
        tools.append(_function(function, f"functions[{index}]"))
    return tuple(tools)


def _function(function: chat_pb2.FunctionDefinition, param: str) -> FunctionTool:
    if not _FUNCTION_NAME.match(function.name):
        raise InvalidRequest(
            f"Invalid '{param}.name': string does not match pattern. Expected a string that matches the pattern "
            f"'^[a-zA-Z0-9_-]{{1,64}}$'.",
            param=f"{param}.name",
        )
    return FunctionTool(
        name=function.name,
        description=function.description,
        parameters=_struct(function.parameters) if function.HasField("parameters") else {},
        strict=bool(optional(function, "strict")),
    )


def _tool_choice(request: chat_pb2.CreateChatCompletionRequest, tools: tuple[FunctionTool, ...]) -> ToolChoice:
    raw = _value(request.tool_choice)
    param = "tool_choice"
    if raw is None and request.HasField("function_call"):
        raw, param = _value(request.function_call), "function_call"
        if isinstance(raw, dict):
            raw = {"type": "function", "function": raw}
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if raw in ("none", "auto", "required"):
        if raw == "required" and not tools:
            raise InvalidRequest("Invalid value for 'tool_choice': 'required' needs 'tools'.", param=param)
        return ToolChoice(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"Missing required parameter: '{param}.function.name'.", param=f"{param}.function.name"
            )
        if name not in {tool.name for tool in tools}:
            raise InvalidRequest(
                f"Invalid value for '{param}': function '{name}' is not among the provided tools.", param=param
            )
        return ToolChoice("function", name)
    raise _invalid_value(param, raw, "'none', 'auto', 'required', or an object naming a function")


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest(
            "Invalid type for 'stop': expected a string or an array of strings.", param="stop", code="invalid_type"
        )
    if len(stops) > _MAX_STOP:
        raise InvalidRequest(f"Invalid 'stop': array too long. Expected at most {_MAX_STOP} items.", param="stop")
    return tuple(s for s in stops if s)


def _response_format(message: chat_pb2.ResponseFormat | None) -> ResponseFormat:
    if message is None or not message.type:
        return ResponseFormat()
    if message.type in ("text", "json_object"):
        return ResponseFormat(type=message.type)  # type: ignore[arg-type]
    if message.type == "json_schema":
        if not message.HasField("json_schema") or not message.json_schema.name:
            raise InvalidRequest(
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
                code="missing_required_parameter",
            )
        schema = message.json_schema
        return ResponseFormat(
            type="json_schema",
            name=schema.name,
            schema=_struct(schema.schema) if schema.HasField("schema") else {},
            strict=bool(optional(schema, "strict")),
        )
    raise _invalid_value("response_format.type", message.type, "'text', 'json_object', 'json_schema'")


def _max_tokens(request: chat_pb2.CreateChatCompletionRequest) -> int | None:
    caps = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = optional(request, name)
        if value is not None:
            _check_range(name, value, 1, 2**31 - 1)
            caps.append(value)
    return min(caps) if caps else None


def _logit_bias(bias: Mapping[str, float]) -> dict[str, float]:
    for token, weight in bias.items():
        if not _TOKEN_ID.fullmatch(token):
            raise InvalidRequest(f"Invalid key in 'logit_bias': {token!r} is not a token id.", param="logit_bias")
        _check_range(f"logit_bias.{token}", weight, -100, 100)
    return dict(bias)


def to_chat_request(request: chat_pb2.CreateChatCompletionRequest) -> ChatRequest:
    """Checks every parameter as OpenAI documents it; raises InvalidRequest naming the param."""
    if not request.model:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing_required_parameter")
    if not request.messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    messages = tuple(_message(message, index) for index, message in enumerate(request.messages))
    temperature = optional(request, "temperature")
    top_p = optional(request, "top_p")
    n = optional(request, "n")
    _check_range("temperature", temperature, 0, 2)
    _check_range("top_p", top_p, 0, 1)
    _check_range("n", n, 1, 128)
    presence = optional(request, "presence_penalty")
    frequency = optional(request, "frequency_penalty")
    _check_range("presence_penalty", presence, -2, 2)
    _check_range("frequency_penalty", frequency, -2, 2)
    logprobs = bool(optional(request, "logprobs"))
    top_logprobs = optional(request, "top_logprobs")
    _check_range("top_logprobs", top_logprobs, 0, 20)
    if top_logprobs is not None and not logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    tools = _tools(request)
    stream = bool(optional(request, "stream"))
    include_usage = request.HasField("stream_options") and bool(optional(request.stream_options, "include_usage"))
    if request.HasField("stream_options") and not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    return ChatRequest(
        model=request.model,
        messages=messages,
        max_tokens=_max_tokens(request),
        temperature=temperature,
        top_p=top_p,
        n=1 if n is None else n,
        stop=_stop(_value(request.stop)),
        tools=tools,
        tool_choice=_tool_choice(request, tools),
        parallel_tool_calls=optional(request, "parallel_tool_calls") is not False,
        response_format=_response_format(request.response_format if request.HasField("response_format") else None),
        seed=optional(request, "seed"),
        presence_penalty=presence,
        frequency_penalty=frequency,
        logit_bias=_logit_bias(request.logit_bias),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        user=request.user,
        metadata=dict(request.metadata),
        reasoning_effort=request.reasoning_effort,
        stream=stream,
        include_usage=include_usage,
    )
