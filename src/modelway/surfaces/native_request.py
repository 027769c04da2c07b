"""Validates a gateway-native request (POST /api/v1/ai/chat or /generate) into a ChatRequest, in its own words.

    chat:     {"messages": [{"role", "content"}...], "system"?, "model"?, "temperature"?, "max_tokens"?, "stream"?}
    generate: {"prompt", "system"?, "model"?, "temperature"?, "max_tokens"?, "stream"?}

`model` defaults to the `auto` alias. `system` is the system prompt, given
instead of a "system" message (not both). `max_tokens` above a model's own
cap is lowered to it by the pipeline (see routing.output_cap), not refused.
Fields the API does not define are ignored. Each failure names the field in
its message; the dialect maps the reason to the API's code (VALIDATION_ERROR,
INPUT_TOO_LARGE, INVALID_BODY).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

from modelway.core.types import ChatRequest, Message, Role, TextPart
from modelway.errors import GatewayError, Reason, clip
from modelway.surfaces.json_body import json_type, load_json
from modelway.surfaces.openai_request import MAX_MESSAGES

__all__ = ["DEFAULT_MODEL", "MAX_INPUT_CHARS", "Kind", "parse_native_body", "parse_native_request"]

# The largest `prompt` (generate) or sum of message texts and `system` (chat), in characters.
MAX_INPUT_CHARS = 500_000
DEFAULT_MODEL = "auto"
# The largest max_tokens kept as given; anything above is lowered to the model's cap anyway.
_MAX_TOKENS_CEILING = 2**31 - 1

Kind = Literal["chat", "generate"]
_ROLES = ("system", "user", "assistant")


def _wrong_type(field: str, expected: str, value: Any) -> GatewayError:
    return GatewayError(
        Reason.INVALID_TYPE, f"`{clip(field)}` must be {expected}, got {json_type(value)}.", param=field
    )


def _missing(field: str, what: str) -> GatewayError:
    return GatewayError(Reason.MISSING_REQUIRED_PARAMETER, f"`{field}` is required: {what}.", param=field)


def _string(data: Mapping[str, Any], field: str, where: str = "") -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong_type(where or field, "a string", value)
    return value


def _temperature(data: Mapping[str, Any]) -> float | None:
    value = data.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type("temperature", "a number", value)
    if not 0 <= value <= 2:
        reason = Reason.DECIMAL_BELOW_MIN if value < 0 else Reason.DECIMAL_ABOVE_MAX
        raise GatewayError(reason, f"`temperature` must be between 0 and 2, got {clip(value)}.", param="temperature")
    return float(value)


def _max_tokens(data: Mapping[str, Any]) -> int | None:
    value = data.get("max_tokens")
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise _wrong_type("max_tokens", "an integer", value)
    if value < 1:
        raise GatewayError(
            Reason.INTEGER_BELOW_MIN, f"`max_tokens` must be at least 1, got {clip(value)}.", param="max_tokens"
        )
    # Above the model's cap it is lowered to it by the pipeline; keep it in range for everything downstream.
    return min(int(value), _MAX_TOKENS_CEILING)


def _too_large(field: str, size: int, system: str | None) -> GatewayError:
    counted = f"`{field}` and `system` are" if system else f"`{field}` is"
    return GatewayError(
        Reason.INPUT_TOO_LARGE,
        f"{counted} {size:,} characters long; at most {MAX_INPUT_CHARS:,} are accepted.",
        param=field,
    )


def _messages(data: Mapping[str, Any], system: str | None) -> tuple[Message, ...]:
    raw = data.get("messages")
    if raw is None:
        raise _missing("messages", 'an array of {"role", "content"} objects')
    if not isinstance(raw, list):
        raise _wrong_type("messages", "an array", raw)
    if not raw:
        raise GatewayError(Reason.EMPTY_ARRAY, "`messages` must hold at least one message.", param="messages")
    if len(raw) > MAX_MESSAGES:
        raise GatewayError(
            Reason.ARRAY_TOO_LONG,
            f"`messages` holds {len(raw)} messages; at most {MAX_MESSAGES} are accepted.",
            param="messages",
        )
    messages = []
    size = len(system or "")
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _wrong_type(where, "an object", item)
        role = _string(item, "role", f"{where}.role")
        if role is None:
            raise _missing(f"{where}.role", "one of " + ", ".join(_ROLES))
        if role not in _ROLES:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"`{where}.role` must be one of {', '.join(_ROLES)}, got {clip(role)!r}.",
                param=f"{where}.role",
            )
        if role == "system" and system is not None:
            raise GatewayError(
                Reason.INVALID_VALUE,
                "Give the system prompt either as `system` or as a system message, not both.",
                param="system",
            )
        content = _string(item, "content", f"{where}.content")
        if content is None:
            raise _missing(f"{where}.content", "the message's text")
        size += len(content)
        messages.append(Message(role=cast(Role, role), content=(TextPart(content),)))
    if size > MAX_INPUT_CHARS:
        raise _too_large("messages", size, system)
    return tuple(messages)


def _prompt(data: Mapping[str, Any], system: str | None) -> tuple[Message, ...]:
    prompt = _string(data, "prompt")
    if not prompt:
        raise _missing("prompt", "the text to answer")
    size = len(prompt) + len(system or "")
    if size > MAX_INPUT_CHARS:
        raise _too_large("prompt", size, system)
    return (Message(role="user", content=(TextPart(prompt),)),)


def parse_native_body(body: bytes, kind: Kind) -> ChatRequest:
    """A raw HTTP body: JSON first (INVALID_BODY when it is not a JSON object), then every field."""
    data = load_json(body, "The request body is not valid JSON ({problem}).")
    return parse_native_request(data, kind)


def parse_native_request(data: Any, kind: Kind) -> ChatRequest:
    """Checks every field the API defines; raises GatewayError naming the field."""
    if not isinstance(data, dict):
        raise GatewayError(Reason.INVALID_BODY, f"The request body must be a JSON object, got {json_type(data)}.")
    model = _string(data, "model")
    if model == "":
        raise GatewayError(Reason.INVALID_VALUE, "`model` must not be empty; leave it out for `auto`.", param="model")
    # An empty system prompt is no system prompt.
    system = _string(data, "system") or None
    messages = _messages(data, system) if kind == "chat" else _prompt(data, system)
    if system is not None:
        messages = (Message(role="system", content=(TextPart(system),)), *messages)
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    return ChatRequest(
        model=model or DEFAULT_MODEL,
        messages=messages,
        max_tokens=_max_tokens(data),
        temperature=_temperature(data),
        stream=bool(stream),
    )
