"""Validates a Gemini generateContent body (https://ai.google.dev/api/generate-content) into a ChatRequest.

Every field is read in camelCase or snake_case at any depth (`topP` or
`top_p`, `inlineData` or `inline_data`): the REST API accepts both, and the
google-genai SDK sends a mix. Names that are the caller's data (schema
property names, function arguments) are never rewritten. Errors are 400
INVALID_ARGUMENT naming the field by its camelCase path. The work one body
can cause is bounded as for OpenAI bodies (contents and nesting).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from modelway.core.types import (
    ChatRequest,
    ContentPart,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
)
from modelway.errors import GatewayError, Reason, clip
from modelway.surfaces.json_body import json_type, load_json
from modelway.surfaces.openai_request import MAX_DEPTH, MAX_MESSAGES, depth_over

__all__ = [
    "MAX_CANDIDATES",
    "check_stream_format",
    "model_from_path",
    "parse_generate_content",
    "parse_generate_content_body",
    "stream_format",
]

# streamGenerateContent's `alt`: "sse" for server-sent events; "json" (or none, Google's default) for one JSON array.
_STREAM_FORMATS = ("", "json", "sse")

# Gemini's own limits.
MAX_CANDIDATES = 8
_MAX_STOP = 5
# Gemini's rule for function names: a letter or underscore, then letters, digits, _ . : -
_FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
_MIME_TYPES = ("text/plain", "application/json")
_MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
# Tools other than functions need Google's own backends (search, code execution, ...).
_FOREIGN_TOOLS = (
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "retrieval",
    "computerUse",
    "fileSearch",
    "googleMaps",
)
_UNSUPPORTED_PARTS = ("executableCode", "codeExecutionResult", "videoMetadata")
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _invalid(path: str, message: str, reason: Reason = Reason.INVALID_VALUE) -> GatewayError:
    return GatewayError(reason, f"Invalid value at '{clip(path)}': {message}", param=path)


def _wrong_type(path: str, expected: str, value: Any) -> GatewayError:
    return _invalid(path, f"expected {expected}, got {json_type(value)}.", Reason.INVALID_TYPE)


def missing_parameter(path: str) -> GatewayError:
    name = path.rsplit(".", 1)[-1]
    return GatewayError(
        Reason.MISSING_REQUIRED_PARAMETER, f"* GenerateContentRequest.{clip(path)}: {name} is not specified", param=path
    )


class _Fields:
    """One JSON object of the request, read by camelCase name whichever spelling the caller used."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise _wrong_type(path or "request", "an object", data)
        self.data: dict[str, Any] = data
        self.path = path

    def where(self, camel: str) -> str:
        return f"{self.path}.{camel}" if self.path else camel

    def raw(self, camel: str) -> Any:
        value = self.data.get(camel)
        return self.data.get(_snake(camel)) if value is None else value

    def object(self, camel: str) -> _Fields | None:
        value = self.raw(camel)
        return None if value is None else _Fields(value, self.where(camel))

    def list(self, camel: str) -> list[Any]:
        value = self.raw(camel)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _wrong_type(self.where(camel), "an array", value)
        return value

    def string(self, camel: str) -> str | None:
        value = self.raw(camel)
        if value is not None and not isinstance(value, str):
            raise _wrong_type(self.where(camel), "a string", value)
        return value

    def boolean(self, camel: str) -> bool | None:
        value = self.raw(camel)
        if value is not None and not isinstance(value, bool):
            raise _wrong_type(self.where(camel), "a boolean", value)
        return value

    def number(self, camel: str, low: float, high: float) -> float | None:
        value = self.raw(camel)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(self.where(camel), "a number", value)
        if not low <= value <= high:
            raise _invalid(self.where(camel), f"{value:g} is out of range; expected {low:g} to {high:g}.")
        return float(value)

    def integer(self, camel: str, low: int, high: int = 2**31 - 1) -> int | None:
        value = self.raw(camel)
        if value is None:
            return None
        # Protobuf JSON also writes int64 values as strings.
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
            value = int(value)
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            raise _wrong_type(self.where(camel), "an integer", value)
        if not low <= value <= high:
            raise _invalid(self.where(camel), f"{value:g} is out of range; expected {low} to {high}.")
        return int(value)

    def strings(self, camel: str) -> tuple[str, ...]:
        values = self.list(camel)
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise _wrong_type(f"{self.where(camel)}[{index}]", "a string", value)
        return tuple(values)


def model_from_path(raw: str) -> str:
    """The model a path names: percent-decoded, without the resource's "models/" prefix."""
    return urllib.parse.unquote(raw).removeprefix("models/")


def stream_format(metadata: Mapping[str, str]) -> str:
    """The `alt` query parameter of a REST call (Envoy keeps the query in x-envoy-original-path); "" without one."""
    query = urllib.parse.urlsplit(metadata.get("x-envoy-original-path", "")).query
    return urllib.parse.parse_qs(query).get("alt", [""])[-1]


def check_stream_format(alt: str) -> None:
    if alt not in _STREAM_FORMATS:
        raise GatewayError(
            Reason.INVALID_VALUE,
            f"Invalid value at 'alt' ({clip(alt)!r}): streamGenerateContent answers alt=sse (server-sent events) "
            "or alt=json (one JSON array, the default).",
            param="alt",
        )


def schema_to_json_schema(raw: Any, path: str) -> dict[str, Any]:
    """A Gemini Schema (OpenAPI subset: `type: "OBJECT"`, `nullable`, camel or snake keys) as JSON Schema."""
    if not isinstance(raw, dict):
        raise _wrong_type(path, "an object", raw)
    schema: dict[str, Any] = {}
    nullable = False
    for key, value in raw.items():
        name = _camel(key)
        where = f"{path}.{name}"
        if name == "type":
            if not isinstance(value, str):
                raise _wrong_type(where, "a string", value)
            if value.upper() != "TYPE_UNSPECIFIED":
                schema["type"] = value.lower()
        elif name == "nullable":
            nullable = value is True
        elif name == "propertyOrdering":
            continue  # an output-order hint: JSON Schema has none
        elif name == "items":
            schema["items"] = schema_to_json_schema(value, where)
        elif name in _SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise _wrong_type(where, "an object", value)
            # Property names are the caller's: kept as written.
            schema[name] = {prop: schema_to_json_schema(sub, f"{where}.{prop}") for prop, sub in value.items()}
        elif name in _SCHEMA_LISTS:
            if not isinstance(value, list):
                raise _wrong_type(where, "an array", value)
            schema[name] = [schema_to_json_schema(sub, f"{where}[{i}]") for i, sub in enumerate(value)]
        elif name == "example":
            schema["examples"] = [value]
        else:
            schema[name] = value
    if nullable:
        kind = schema.get("type")
        schema["type"] = [kind, "null"] if isinstance(kind, str) else kind
    return schema


def _base64(data: Any, path: str) -> str:
    if not isinstance(data, str) or not data:
        raise _wrong_type(path, "base64 text", data)
    try:
        # Google accepts both alphabets; URL-safe text is normalised for data: URLs.
        base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(path, "not valid base64.") from None
    return data.replace("-", "+").replace("_", "/")


class _History:
    """The contents turned into canonical messages; function calls get ids their responses can refer to."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        # Function name -> ids of its calls not answered yet, oldest first.
        self._pending: dict[str, list[str]] = {}

    def add(self, content: _Fields) -> None:
        role = content.string("role") or "user"
        if role not in ("user", "model", "function", "tool"):
            raise _invalid(content.where("role"), f"{clip(role)!r} is not a role; expected 'user' or 'model'.")
        parts = content.list("parts")
        if not parts:
            raise missing_parameter(content.where("parts"))
        text: list[ContentPart] = []
        calls: list[ToolCall] = []
        answers: list[Message] = []
        for index, raw in enumerate(parts):
            part = _Fields(raw, f"{content.where('parts')}[{index}]")
            self._part(part, role, text, calls, answers)
        # Function results answer the previous model turn: they come before the turn's own words.
        self.messages.extend(answers)
        if role == "model":
            if text or calls:
                self.messages.append(Message(role="assistant", content=tuple(text), tool_calls=tuple(calls)))
        elif text:
            self.messages.append(Message(role="user", content=tuple(text)))

    def _part(
        self, part: _Fields, role: str, text: list[ContentPart], calls: list[ToolCall], answers: list[Message]
    ) -> None:
        for name in _UNSUPPORTED_PARTS:
            if part.raw(name) is not None:
                raise _invalid(part.where(name), f"{name} parts are not supported by this gateway.")
        if part.boolean("thought"):
            return  # the model's thought summaries are not sent back
        value = part.string("text")
        if value is not None:
            text.append(TextPart(value))
            return
        inline = part.object("inlineData")
        if inline is not None:
            mime = inline.string("mimeType")
            if not mime:
                raise missing_parameter(inline.where("mimeType"))
            data = _base64(inline.raw("data"), inline.where("data"))
            text.append(ImagePart(url=f"data:{mime};base64,{data}"))
            return
        file = part.object("fileData")
        if file is not None:
            uri = file.string("fileUri")
            if not uri:
                raise missing_parameter(file.where("fileUri"))
            if urllib.parse.urlsplit(uri).scheme.lower() not in ("http", "https"):
                raise _invalid(file.where("fileUri"), "only http and https URIs are supported by this gateway.")
            text.append(ImagePart(url=uri))
            return
        call = part.object("functionCall")
        if call is not None:
            if role != "model":
                raise _invalid(call.path, "functionCall parts belong in 'model' turns.")
            calls.append(self._call(call))
            return
        answer = part.object("functionResponse")
        if answer is not None:
            answers.append(self._answer(answer))
            return
        raise _invalid(part.path, "a part needs one of text, inlineData, fileData, functionCall or functionResponse.")

    def _call(self, call: _Fields) -> ToolCall:
        name = call.string("name")
        if not name:
            raise missing_parameter(call.where("name"))
        args = call.raw("args")
        if args is not None and not isinstance(args, dict):
            raise _wrong_type(call.where("args"), "an object", args)
        call_id = call.string("id") or f"call_{len(self.messages)}_{sum(map(len, self._pending.values()))}"
        self._pending.setdefault(name, []).append(call_id)
        return ToolCall(id=call_id, name=name, arguments=orjson.dumps(args or {}).decode())

    def _answer(self, answer: _Fields) -> Message:
        name = answer.string("name")
        if not name:
            raise missing_parameter(answer.where("name"))
        response = answer.raw("response")
        if not isinstance(response, dict):
            raise _wrong_type(answer.where("response"), "an object", response)
        pending = self._pending.get(name, [])
        call_id = answer.string("id") or ""
        if call_id in pending:
            pending.remove(call_id)
        elif not call_id:
            # Gemini matches results to calls by name, in order.
            call_id = pending.pop(0) if pending else f"call_{name}"
        return Message(
            role="tool", content=(TextPart(orjson.dumps(response).decode()),), name=name, tool_call_id=call_id
        )


def _system(raw: Any) -> Message | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return Message(role="system", content=(TextPart(raw),))
    instruction = _Fields(raw, "systemInstruction")
    texts: list[ContentPart] = []
    for index, item in enumerate(instruction.list("parts")):
        part = _Fields(item, f"systemInstruction.parts[{index}]")
        text = part.string("text")
        if text is None:
            raise _invalid(part.path, "a system instruction takes text parts only.")
        texts.append(TextPart(text))
    return Message(role="system", content=tuple(texts)) if texts else None


def _declaration(raw: Any, path: str) -> FunctionTool:
    declaration = _Fields(raw, path)
    name = declaration.string("name") or ""
    if not _FUNCTION_NAME.match(name):
        raise _invalid(
            declaration.where("name"),
            f"{clip(name)!r} is not a function name: it must start with a letter or an underscore and hold at most "
            "64 letters, digits, underscores, dots, colons and dashes.",
        )
    schema = declaration.raw("parameters")
    json_schema = declaration.raw("parametersJsonSchema")
    if schema is not None and json_schema is not None:
        raise _invalid(declaration.path, "give parameters or parametersJsonSchema, not both.")
    if json_schema is not None and not isinstance(json_schema, dict):
        raise _wrong_type(declaration.where("parametersJsonSchema"), "an object", json_schema)
    parameters = (
        schema_to_json_schema(schema, declaration.where("parameters")) if schema is not None else json_schema or {}
    )
    return FunctionTool(name=name, description=declaration.string("description") or "", parameters=parameters)


def _tools(request: _Fields) -> tuple[FunctionTool, ...]:
    tools: list[FunctionTool] = []
    for index, raw in enumerate(request.list("tools")):
        tool = _Fields(raw, f"tools[{index}]")
        for name in _FOREIGN_TOOLS:
            if tool.raw(name) is not None:
                raise _invalid(tool.where(name), f"{name} tools are not supported by this gateway: only functions.")
        declarations = tool.list("functionDeclarations")
        where = tool.where("functionDeclarations")
        tools.extend(_declaration(item, f"{where}[{i}]") for i, item in enumerate(declarations))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise _invalid("tools", "function names must be unique.")
    return tuple(tools)


def _tool_choice(request: _Fields, tools: tuple[FunctionTool, ...]) -> tuple[ToolChoice, tuple[FunctionTool, ...]]:
    """The calling mode, and the tools the model may call (ANY with allowedFunctionNames narrows them)."""
    config = request.object("toolConfig")
    calling = config.object("functionCallingConfig") if config is not None else None
    if calling is None:
        return ToolChoice("auto" if tools else "none"), tools
    mode = (calling.string("mode") or "MODE_UNSPECIFIED").upper()
    if mode not in _MODES:
        raise _invalid(calling.where("mode"), f"{clip(mode)!r} is not a mode; expected AUTO, ANY, NONE or VALIDATED.")
    allowed = calling.strings("allowedFunctionNames")
    unknown = [name for name in allowed if name not in {tool.name for tool in tools}]
    if unknown:
        raise _invalid(calling.where("allowedFunctionNames"), f"{clip(unknown[0])!r} is not a declared function.")
    if mode == "NONE":
        return ToolChoice("none"), tools
    if mode != "ANY":
        return ToolChoice("auto" if tools else "none"), tools
    if not tools:
        raise _invalid(calling.where("mode"), "ANY needs at least one function declaration.")
    if len(allowed) == 1:
        return ToolChoice("function", allowed[0]), tools
    if allowed:
        return ToolChoice("required"), tuple(tool for tool in tools if tool.name in allowed)
    return ToolChoice("required"), tools


def _response_format(config: _Fields) -> ResponseFormat:
    mime = config.string("responseMimeType") or "text/plain"
    if mime not in _MIME_TYPES:
        raise _invalid(
            config.where("responseMimeType"),
            f"{clip(mime)!r} is not supported; expected text/plain or application/json.",
        )
    schema = config.raw("responseSchema")
    json_schema = config.raw("responseJsonSchema")
    if schema is not None and json_schema is not None:
        raise _invalid(config.path, "give responseSchema or responseJsonSchema, not both.")
    if json_schema is not None and not isinstance(json_schema, dict):
        raise _wrong_type(config.where("responseJsonSchema"), "an object", json_schema)
    if schema is not None:
        json_schema = schema_to_json_schema(schema, config.where("responseSchema"))
    if json_schema is not None and mime != "application/json":
        raise _invalid(config.where("responseMimeType"), "a response schema needs responseMimeType application/json.")
    if mime == "text/plain":
        return ResponseFormat()
    if json_schema is None:
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", name="response", schema=json_schema)


def _safety(request: _Fields) -> None:
    """Safety settings are accepted (the gateway filters nothing itself) but must be well-formed."""
    for index, raw in enumerate(request.list("safetySettings")):
        setting = _Fields(raw, f"safetySettings[{index}]")
        setting.string("category")
        setting.string("threshold")


def check_bounds(data: dict[str, Any]) -> None:
    contents = data.get("contents")
    if isinstance(contents, list) and len(contents) > MAX_MESSAGES:
        raise GatewayError(
            Reason.ARRAY_TOO_LONG,
            f"Invalid value at 'contents': {len(contents)} contents; at most {MAX_MESSAGES} are accepted.",
            param="contents",
        )
    for name, value in data.items():
        if isinstance(value, (dict, list)) and depth_over(value, MAX_DEPTH):
            raise GatewayError(
                Reason.NESTED_TOO_DEEPLY,
                f"Invalid value at '{clip(_camel(name))}': arrays and objects may nest at most {MAX_DEPTH} levels.",
                param=clip(_camel(name)),
            )


def parse_generate_content_body(model: str, body: bytes, *, stream: bool) -> ChatRequest:
    """A raw HTTP body (JSON first) for the model named in the path."""
    data = load_json(body, "Invalid JSON payload received. {problem}.")
    return parse_generate_content(model_from_path(model), data, stream=stream)


def parse_generate_content(model: str, data: Any, *, stream: bool) -> ChatRequest:
    """Checks every field as Gemini documents it; raises GatewayError naming the field."""
    if not isinstance(data, dict):
        raise GatewayError(Reason.INVALID_BODY, "Invalid JSON payload received. Expected a JSON object.")
    if not model:
        raise GatewayError(Reason.MISSING_REQUIRED_PARAMETER, "A model is required in the path.", param="model")
    check_bounds(data)
    request = _Fields(data, "")
    history = _History()
    contents = request.list("contents")
    if not contents:
        raise missing_parameter("contents")
    for index, raw in enumerate(contents):
        history.add(_Fields(raw, f"contents[{index}]"))
    if not any(message.role == "user" or message.role == "tool" for message in history.messages):
        raise _invalid("contents", "at least one 'user' turn is needed.")
    system = _system(request.raw("systemInstruction"))
    tools = _tools(request)
    tool_choice, tools = _tool_choice(request, tools)
    _safety(request)
    config = request.object("generationConfig") or _Fields({}, "generationConfig")
    stop = config.strings("stopSequences")
    if len(stop) > _MAX_STOP:
        raise _invalid(config.where("stopSequences"), f"at most {_MAX_STOP} stop sequences are accepted.")
    candidates = config.integer("candidateCount", 1, MAX_CANDIDATES)
    seed: int | None = config.integer("seed", -(2**63), 2**63 - 1)
    return ChatRequest(
        model=model,
        messages=((system,) if system else ()) + tuple(history.messages),
        max_tokens=config.integer("maxOutputTokens", 1),
        temperature=config.number("temperature", 0, 2),
        top_p=config.number("topP", 0, 1),
        top_k=config.integer("topK", 1),
        n=candidates or 1,
        stop=tuple(s for s in stop if s),
        tools=tools,
        tool_choice=tool_choice,
        response_format=_response_format(config),
        seed=seed,
        presence_penalty=config.number("presencePenalty", -2, 2),
        frequency_penalty=config.number("frequencyPenalty", -2, 2),
        stream=stream,
    )
