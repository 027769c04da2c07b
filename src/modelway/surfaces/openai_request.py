"""Validates an OpenAI chat request body (parsed JSON) into a ChatRequest, in OpenAI's words.

The REST route hands the server the raw body, so this is where every type
and range is checked. The work one body can cause is bounded: at most
MAX_MESSAGES messages (OpenAI's own limit), `n` from 1 to 128, and no value
nested deeper than MAX_DEPTH levels (upstream encoders and protobuf's Struct
give up past 255 and 100). Fields the gateway does not interpret are kept in
`ChatRequest.extra` for OpenAI-compatible upstreams, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from modelway.core.types import (
    ChatRequest,
    ContentPart,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    Role,
    RoutingPreferences,
    TextPart,
    ToolCall,
    ToolChoice,
)
from modelway.errors import GatewayError, Reason, clip
from modelway.surfaces.json_body import json_type, load_json

__all__ = ["MAX_DEPTH", "MAX_MESSAGES", "parse_chat_body", "parse_chat_request"]

MAX_MESSAGES = 2048
MAX_DEPTH = 64

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_STOP = 4
_TOKEN_ID = re.compile(r"[0-9]+")
_SORTS = ("", "price", "latency", "throughput")
# What a body that leaves these out asks for (immutable, so one of each serves every request).
_TOOL_CHOICE_AUTO, _TOOL_CHOICE_NONE = ToolChoice("auto"), ToolChoice("none")
_TEXT_FORMAT = ResponseFormat()
_ANY_PROVIDER = RoutingPreferences()
# Parameters the gateway reads itself; every other top-level field goes upstream as it came.
_INTERPRETED = frozenset(
    {
        "model", "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "stream",
        "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "metadata",
        "reasoning_effort", "functions", "function_call", "provider",
    }
)  # fmt: skip
_MAX_INT32 = 2**31 - 1
# The scalar parameters: their type and, for numbers, the inclusive range allowed (None: any): OpenAI's,
# and a 32-bit integer's where it documents none. Checked by walking the body's own keys (see `_scalars`):
# most bodies set two or three of them.
_SCALARS: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0, 2),
    "top_p": (float, 0, 1),
    "n": (int, 1, 128),
    # Not OpenAI's (SDK users send it through extra_body), but Anthropic and Gemini upstreams take it. It
    # stays among the fields passed on to OpenAI-compatible upstreams as they came.
    "top_k": (int, 1, _MAX_INT32),
    "presence_penalty": (float, -2, 2),
    "frequency_penalty": (float, -2, 2),
    "top_logprobs": (int, 0, 20),
    "max_tokens": (int, 1, _MAX_INT32),
    "max_completion_tokens": (int, 1, _MAX_INT32),
    "seed": (int, None, None),
    "logprobs": (bool, None, None),
    "stream": (bool, None, None),
    "parallel_tool_calls": (bool, None, None),
    "user": (str, None, None),
    "reasoning_effort": (str, None, None),
}
_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    dict: "an object",
    list: "an array",
}


def _invalid_type(param: str, expected: str, value: Any) -> GatewayError:
    return GatewayError(
        Reason.INVALID_TYPE,
        f"Invalid type for '{clip(param)}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
    )


def invalid_value(param: str, value: object, allowed: str) -> GatewayError:
    return GatewayError(
        Reason.INVALID_VALUE, f"Invalid value: {clip(value)!r}. Supported values are: {allowed}.", param=param
    )


def missing_parameter(param: str) -> GatewayError:
    return GatewayError(Reason.MISSING_REQUIRED_PARAMETER, f"Missing required parameter: '{clip(param)}'.", param=param)


def typed_field(data: Mapping[str, Any], name: str, kind: type, within: str = "") -> Any:
    """data[name] when present and not null, checked to be of `kind`; None otherwise. `within` is where
    `data` sits in the body (e.g. "messages[2]"): an error then names "messages[2].name". (That name is
    put together only for an error: most fields of every message pass here.)"""
    value = data.get(name)
    if value is None:
        return None
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is int:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        value = int(value) if ok else value
    else:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise _invalid_type(f"{within}.{name}" if within else name, _TYPE_NAMES[kind], value)
    return value


def check_range(param: str, value: float | None, low: float, high: float) -> None:
    if value is None or low <= value <= high:
        return
    kind = "integer" if isinstance(value, int) else "decimal"
    side, relation, bound = ("below", ">=", low) if value < low else ("above", "<=", high)
    raise GatewayError(
        Reason(f"{kind}_{side}_{'min' if side == 'below' else 'max'}_value"),
        f"Invalid '{clip(param)}': {kind} {side} {'minimum' if side == 'below' else 'maximum'} value. "
        f"Expected a value {relation} {bound:g}, but got {value:g} instead.",
        param=param,
    )


def _content(raw: Any, message: str, role: str) -> tuple[ContentPart, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (TextPart(raw),)
    param = f"{message}.content"
    if not isinstance(raw, list):
        raise _invalid_type(param, "a string or an array of content parts", raw)
    parts: list[ContentPart] = []
    for index, part in enumerate(raw):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _invalid_type(where, "an object", part)
        kind = part.get("type")
        if kind == "text":
            text = typed_field(part, "text", str, where)
            if text is None:
                raise missing_parameter(f"{where}.text")
            parts.append(TextPart(text))
        elif kind == "image_url" and role == "user":
            image = typed_field(part, "image_url", dict, where) or {}
            url = typed_field(image, "url", str, f"{where}.image_url")
            if not url:
                raise missing_parameter(f"{where}.image_url.url")
            detail = typed_field(image, "detail", str, f"{where}.image_url") or "auto"
            parts.append(ImagePart(url=url, detail=detail))
        else:
            allowed = "'text', 'image_url'" if role == "user" else "'text'"
            raise invalid_value(f"{where}.type", kind, allowed)
    return tuple(parts)


def _tool_calls(raw: Any, message: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    param = f"{message}.tool_calls"
    if not isinstance(raw, list):
        raise _invalid_type(param, "an array", raw)
    calls = []
    for index, call in enumerate(raw):
        where = f"{param}[{index}]"
        if not isinstance(call, dict):
            raise _invalid_type(where, "an object", call)
        function = typed_field(call, "function", dict, where) or {}
        calls.append(
            ToolCall(
                id=typed_field(call, "id", str, where) or "",
                name=typed_field(function, "name", str, f"{where}.function") or "",
                arguments=typed_field(function, "arguments", str, f"{where}.function") or "",
            )
        )
    return tuple(calls)


def _message(message: Any, index: int) -> Message:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(param, "an object", message)
    role = typed_field(message, "role", str, param)
    if not role:
        raise missing_parameter(f"{param}.role")
    if role not in _ROLES:
        raise invalid_value(f"{param}.role", role, ", ".join(f"'{r}'" for r in _ROLES))
    content = _content(message.get("content"), param, role)
    calls = _tool_calls(message.get("tool_calls"), param)
    function_call = typed_field(message, "function_call", dict, param)
    if function_call is not None:
        calls += (
            ToolCall(
                id="",
                name=typed_field(function_call, "name", str, f"{param}.function_call") or "",
                arguments=typed_field(function_call, "arguments", str, f"{param}.function_call") or "",
            ),
        )
    tool_call_id = typed_field(message, "tool_call_id", str, param) or ""
    if role == "tool" and not tool_call_id:
        raise missing_parameter(f"{param}.tool_call_id")
    if not content and not calls and role != "assistant":
        raise missing_parameter(f"{param}.content")
    name = typed_field(message, "name", str, param) or ""
    return Message(role=cast(Role, role), content=content, name=name, tool_calls=calls, tool_call_id=tool_call_id)


def _function(function: Any, param: str) -> FunctionTool:
    if not isinstance(function, dict):
        raise _invalid_type(param, "an object", function)
    name = typed_field(function, "name", str, param) or ""
    if not _FUNCTION_NAME.match(name):
        raise GatewayError(
            Reason.INVALID_VALUE,
            f"Invalid '{param}.name': string does not match pattern. Expected a string that matches the pattern "
            f"'^[a-zA-Z0-9_-]{{1,64}}$'.",
            param=f"{param}.name",
        )
    return FunctionTool(
        name=name,
        description=typed_field(function, "description", str, param) or "",
        parameters=typed_field(function, "parameters", dict, param) or {},
        strict=bool(typed_field(function, "strict", bool, param)),
    )


def _tools(data: Mapping[str, Any]) -> tuple[FunctionTool, ...]:
    tools: list[FunctionTool] = []
    for index, tool in enumerate(typed_field(data, "tools", list) or ()):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid_type(where, "an object", tool)
        if tool.get("type") != "function":
            raise invalid_value(f"{where}.type", tool.get("type"), "'function'")
        tools.append(_function(tool.get("function"), f"{where}.function"))
    for index, function in enumerate(typed_field(data, "functions", list) or ()):
        tools.append(_function(function, f"functions[{index}]"))
    return tuple(tools)


def _tool_choice(data: Mapping[str, Any], tools: tuple[FunctionTool, ...]) -> ToolChoice:
    raw, param = data.get("tool_choice"), "tool_choice"
    if raw is None and data.get("function_call") is not None:
        raw, param = data["function_call"], "function_call"
        if isinstance(raw, dict):
            raw = {"type": "function", "function": raw}
    if raw is None:
        return _TOOL_CHOICE_AUTO if tools else _TOOL_CHOICE_NONE
    if raw in ("none", "auto", "required"):
        if raw == "required" and not tools:
            raise GatewayError(
                Reason.INVALID_VALUE, "Invalid value for 'tool_choice': 'required' needs 'tools'.", param=param
            )
        return ToolChoice(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise missing_parameter(f"{param}.function.name")
        if name not in {tool.name for tool in tools}:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Invalid value for '{param}': function '{clip(name)}' is not among the provided tools.",
                param=param,
            )
        return ToolChoice("function", name)
    raise invalid_value(param, raw, "'none', 'auto', 'required', or an object naming a function")


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _invalid_type("stop", "a string or an array of strings", raw)
    if len(stops) > _MAX_STOP:
        raise GatewayError(
            Reason.INVALID_VALUE, f"Invalid 'stop': array too long. Expected at most {_MAX_STOP} items.", param="stop"
        )
    return tuple(s for s in stops if s)


def _response_format(data: Mapping[str, Any]) -> ResponseFormat:
    raw = typed_field(data, "response_format", dict)
    if raw is None:
        return _TEXT_FORMAT
    kind = raw.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind == "json_schema":
        schema = typed_field(raw, "json_schema", dict, "response_format") or {}
        name = typed_field(schema, "name", str, "response_format.json_schema")
        if not name:
            raise missing_parameter("response_format.json_schema.name")
        return ResponseFormat(
            type="json_schema",
            name=name,
            schema=typed_field(schema, "schema", dict, "response_format.json_schema") or {},
            strict=bool(typed_field(schema, "strict", bool, "response_format.json_schema")),
        )
    if kind is None:
        raise missing_parameter("response_format.type")
    raise invalid_value("response_format.type", kind, "'text', 'json_object', 'json_schema'")


def _scalars(data: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar parameters the body sets (null is unset), each checked for its type and range, in the
    body's order. They are checked before the structured ones (messages, tools...): of several wrong
    parameters, the error names the first wrong scalar, else the first wrong structured one."""
    found: dict[str, Any] = {}
    for name, value in data.items():
        spec = _SCALARS.get(name)
        if spec is None or value is None:
            continue
        kind, low, high = spec
        found[name] = typed_field(data, name, kind)
        if low is not None and high is not None:
            check_range(name, found[name], low, high)
    return found


def _entry(data: Mapping[str, Any], key: str, kind: type, within: str) -> Any:
    """A map's value, of `kind`; a null one is refused (null unsets a parameter, not a map's entry)."""
    if data[key] is None:
        raise _invalid_type(f"{within}.{key}", _TYPE_NAMES[kind], None)
    return typed_field(data, key, kind, within)


def _logit_bias(data: Mapping[str, Any]) -> dict[str, float]:
    bias = typed_field(data, "logit_bias", dict) or {}
    weights: dict[str, float] = {}
    for token in bias:
        if not _TOKEN_ID.fullmatch(token):
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Invalid key in 'logit_bias': {clip(token)!r} is not a token id.",
                param="logit_bias",
            )
        weights[token] = _entry(bias, token, float, "logit_bias")
        check_range(f"logit_bias.{token}", weights[token], -100, 100)
    return weights


def _metadata(data: Mapping[str, Any]) -> dict[str, str]:
    metadata = typed_field(data, "metadata", dict) or {}
    return {key: _entry(metadata, key, str, "metadata") for key in metadata}


def _strings(data: Mapping[str, Any], name: str, within: str) -> tuple[str, ...]:
    values = typed_field(data, name, list, within) or []
    if not all(isinstance(value, str) for value in values):
        raise _invalid_type(f"{within}.{name}", "an array of strings", values)
    return tuple(values)


def _routing(data: Mapping[str, Any]) -> RoutingPreferences:
    raw = typed_field(data, "provider", dict)
    if raw is None:
        return _ANY_PROVIDER
    sort = typed_field(raw, "sort", str, "provider") or ""
    if sort not in _SORTS:
        raise invalid_value("provider.sort", sort, "'price', 'latency', 'throughput'")
    allow = typed_field(raw, "allow_fallbacks", bool, "provider")
    return RoutingPreferences(
        order=_strings(raw, "order", "provider"),
        allow_fallbacks=allow is not False,
        sort=sort,  # type: ignore[arg-type]
        only=_strings(raw, "only", "provider"),
        ignore=_strings(raw, "ignore", "provider"),
    )


def depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests arrays/objects more than `limit` deep (iterative: no recursion limit to hit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def check_bounds(data: dict[str, Any]) -> None:
    """The limits on the work one body may cause, checked before anything is built from it."""
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
        raise GatewayError(
            Reason.ARRAY_TOO_LONG,
            f"Invalid 'messages': array too long. Expected an array with maximum length {MAX_MESSAGES}, but got an "
            f"array with length {len(messages)} instead.",
            param="messages",
        )
    for name, value in data.items():
        if isinstance(value, (dict, list)) and depth_over(value, MAX_DEPTH):
            raise GatewayError(
                Reason.NESTED_TOO_DEEPLY,
                f"Invalid '{clip(name)}': nested too deeply. Arrays and objects may nest at most {MAX_DEPTH} levels.",
                param=clip(name),
            )


def parse_chat_body(body: bytes) -> ChatRequest:
    """A raw HTTP body: JSON first, then every parameter (INVALID_BODY when it is not a JSON object)."""
    data = load_json(body, "We could not parse the JSON body of your request. ({problem})")
    return parse_chat_request(data)


def parse_chat_request(data: Any) -> ChatRequest:
    """Checks every parameter as OpenAI documents it; raises GatewayError naming the param."""
    if not isinstance(data, dict):
        raise GatewayError(
            Reason.INVALID_BODY, "We could not parse the JSON body of your request: expected a JSON object."
        )
    check_bounds(data)
    model = typed_field(data, "model", str)
    if not model:
        raise GatewayError(Reason.MISSING_REQUIRED_PARAMETER, "You must provide a model parameter.", param="model")
    scalars = _scalars(data)
    logprobs = bool(scalars.get("logprobs"))
    top_logprobs = scalars.get("top_logprobs")
    if top_logprobs is not None and not logprobs:
        raise GatewayError(Reason.INVALID_VALUE, "'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    tools = _tools(data)
    stream = bool(scalars.get("stream"))
    stream_options = typed_field(data, "stream_options", dict)
    if stream_options is not None and not stream:
        raise GatewayError(
            Reason.INVALID_VALUE,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    include_usage = bool(typed_field(stream_options or {}, "include_usage", bool, "stream_options"))
    raw_messages = typed_field(data, "messages", list)
    if raw_messages is None:
        raise missing_parameter("messages")
    if not raw_messages:
        raise GatewayError(
            Reason.EMPTY_ARRAY,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
        )
    messages = tuple(_message(message, index) for index, message in enumerate(raw_messages))
    caps = [cap for cap in (scalars.get("max_tokens"), scalars.get("max_completion_tokens")) if cap is not None]
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=min(caps) if caps else None,
        temperature=scalars.get("temperature"),
        top_p=scalars.get("top_p"),
        top_k=scalars.get("top_k"),
        n=scalars.get("n", 1),
        stop=_stop(data.get("stop")),
        tools=tools,
        tool_choice=_tool_choice(data, tools),
        parallel_tool_calls=scalars.get("parallel_tool_calls") is not False,
        response_format=_response_format(data),
        seed=scalars.get("seed"),
        presence_penalty=scalars.get("presence_penalty"),
        frequency_penalty=scalars.get("frequency_penalty"),
        logit_bias=_logit_bias(data),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        user=scalars.get("user") or "",
        metadata=_metadata(data),
        reasoning_effort=scalars.get("reasoning_effort") or "",
        stream=stream,
        include_usage=include_usage,
        routing=_routing(data),
        extra={name: value for name, value in data.items() if name not in _INTERPRETED},
    )
