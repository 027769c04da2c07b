"""Tests for the gateway-native request parser: every field, its checks and its words."""

from __future__ import annotations

from typing import Any

import pytest

from modelway.core.types import Message, TextPart
from modelway.errors import GatewayError, Reason
from modelway.surfaces.native_request import MAX_INPUT_CHARS, parse_native_body, parse_native_request


def fails(data: Any, kind: Any = "chat") -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        parse_native_request(data, kind)
    return raised.value


def test_chat_defaults() -> None:
    request = parse_native_request({"messages": [{"role": "user", "content": "hi"}]}, "chat")
    assert request.model == "auto"
    assert request.messages == (Message(role="user", content=(TextPart("hi"),)),)
    assert (request.temperature, request.max_tokens, request.stream, request.n) == (None, None, False, 1)
    assert dict(request.extra) == {}


def test_generate_with_every_option() -> None:
    request = parse_native_request(
        {"prompt": "p", "system": "s", "model": "echo-1", "temperature": 2, "max_tokens": 5.0, "stream": True},
        "generate",
    )
    assert request.model == "echo-1"
    assert [(m.role, m.text) for m in request.messages] == [("system", "s"), ("user", "p")]
    assert (request.temperature, request.max_tokens, request.stream) == (2.0, 5, True)


def test_unknown_fields_are_ignored_and_empty_system_is_none() -> None:
    request = parse_native_request({"prompt": "p", "system": "", "top_k": 3}, "generate")
    assert [m.role for m in request.messages] == ["user"]


def test_max_tokens_is_kept_in_int32_range() -> None:
    assert parse_native_request({"prompt": "p", "max_tokens": 10**12}, "generate").max_tokens == 2**31 - 1


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        ({"prompt": "p", "temperature": 2.5}, Reason.DECIMAL_ABOVE_MAX, "`temperature` must be between 0 and 2"),
        ({"prompt": "p", "temperature": -1}, Reason.DECIMAL_BELOW_MIN, "got -1"),
        ({"prompt": "p", "temperature": "1"}, Reason.INVALID_TYPE, "`temperature` must be a number, got a string"),
        ({"prompt": "p", "temperature": False}, Reason.INVALID_TYPE, "got a boolean"),
        ({"prompt": "p", "max_tokens": 0}, Reason.INTEGER_BELOW_MIN, "`max_tokens` must be at least 1"),
        ({"prompt": "p", "max_tokens": 2.5}, Reason.INVALID_TYPE, "`max_tokens` must be an integer"),
        ({"prompt": "p", "stream": 1}, Reason.INVALID_TYPE, "`stream` must be a boolean"),
        ({"prompt": "p", "model": ""}, Reason.INVALID_VALUE, "`model` must not be empty"),
        ({"prompt": "p", "model": None, "system": 3}, Reason.INVALID_TYPE, "`system` must be a string"),
        ({}, Reason.MISSING_REQUIRED_PARAMETER, "`prompt` is required"),
        ({"prompt": ""}, Reason.MISSING_REQUIRED_PARAMETER, "`prompt` is required"),
    ],
)
def test_generate_refusals(data: dict[str, Any], reason: Reason, words: str) -> None:
    error = fails(data, "generate")
    assert error.reason is reason and words in error.message


@pytest.mark.parametrize(
    ("data", "reason", "param"),
    [
        ({}, Reason.MISSING_REQUIRED_PARAMETER, "messages"),
        ({"messages": {}}, Reason.INVALID_TYPE, "messages"),
        ({"messages": []}, Reason.EMPTY_ARRAY, "messages"),
        ({"messages": [{"role": "user", "content": "x"}] * 2049}, Reason.ARRAY_TOO_LONG, "messages"),
        ({"messages": ["x"]}, Reason.INVALID_TYPE, "messages[0]"),
        ({"messages": [{"content": "x"}]}, Reason.MISSING_REQUIRED_PARAMETER, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, Reason.INVALID_VALUE, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, Reason.MISSING_REQUIRED_PARAMETER, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, Reason.INVALID_TYPE, "messages[0].content"),
        ({"system": "s", "messages": [{"role": "system", "content": "x"}]}, Reason.INVALID_VALUE, "system"),
    ],
)
def test_chat_refusals(data: dict[str, Any], reason: Reason, param: str) -> None:
    error = fails(data)
    assert (error.reason, error.param) == (reason, param)


def test_input_cap_counts_characters_with_the_system_prompt() -> None:
    parse_native_request({"prompt": "a" * MAX_INPUT_CHARS}, "generate")
    error = fails({"prompt": "a" * (MAX_INPUT_CHARS - 1), "system": "ab"}, "generate")
    assert error.reason is Reason.INPUT_TOO_LARGE
    assert error.message == "`prompt` and `system` are 500,001 characters long; at most 500,000 are accepted."
    error = fails({"messages": [{"role": "user", "content": "a" * 250_001}] * 2})
    assert (error.reason, error.param) == (Reason.INPUT_TOO_LARGE, "messages")
    assert "500,002 characters" in error.message


@pytest.mark.parametrize("body", [b"", b"{", b"nul", b"\xff"])
def test_body_that_is_not_json(body: bytes) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_native_body(body, "chat")
    assert raised.value.reason is Reason.INVALID_BODY and "not valid JSON" in raised.value.message


@pytest.mark.parametrize("body", [b"[]", b"1", b'"x"', b"null"])
def test_body_that_is_not_an_object(body: bytes) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_native_body(body, "generate")
    assert raised.value.reason is Reason.INVALID_BODY and "JSON object" in raised.value.message
