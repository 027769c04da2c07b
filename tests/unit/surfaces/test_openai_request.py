"""Tests for parse_chat_request: OpenAI JSON bodies in, ChatRequest or a 400 out."""

from __future__ import annotations

from typing import Any

import pytest

from modelway.core.types import (
    ChatRequest,
    FunctionTool,
    ImagePart,
    Message,
    ResponseFormat,
    RoutingPreferences,
    TextPart,
    ToolCall,
    ToolChoice,
)
from modelway.errors import GatewayError, Reason
from modelway.surfaces.openai_request import parse_chat_body, parse_chat_request

HELLO = {"role": "user", "content": "Hello"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        "strict": True,
    },
}
SEARCH_TOOL = {"type": "function", "function": {"name": "search"}}


def body(**fields: Any) -> dict[str, Any]:
    """A minimal valid request body, with `fields` added or replaced."""
    return {"model": "echo-1", "messages": [HELLO], **fields}


def convert(data: dict[str, Any]) -> ChatRequest:
    return parse_chat_request(data)


def rejected(data: Any) -> GatewayError:
    """The GatewayError a body raises; every one of them is an HTTP 400."""
    with pytest.raises(GatewayError) as caught:
        convert(data)
    assert caught.value.http_status == 400
    return caught.value


# --- the minimal request and its defaults ---------------------------------


def test_minimal_request_defaults() -> None:
    assert convert(body()) == ChatRequest(
        model="echo-1",
        messages=(Message(role="user", content=(TextPart("Hello"),)),),
        max_tokens=None,
        temperature=None,
        top_p=None,
        n=1,
        stop=(),
        tools=(),
        tool_choice=ToolChoice("none"),
        parallel_tool_calls=True,
        response_format=ResponseFormat("text"),
        seed=None,
        logit_bias={},
        logprobs=False,
        top_logprobs=None,
        user="",
        metadata={},
        stream=False,
        include_usage=False,
        routing=RoutingPreferences(),
        extra={},
    )


def test_missing_model() -> None:
    error = rejected({"messages": [HELLO]})
    assert (error.param, error.reason) == ("model", "missing_required_parameter")


def test_missing_messages() -> None:
    error = rejected({"model": "echo-1"})
    assert (error.param, error.reason) == ("messages", Reason.MISSING_REQUIRED_PARAMETER)
    assert error.message == "Missing required parameter: 'messages'."


def test_empty_messages() -> None:
    error = rejected(body(messages=[]))
    assert (error.param, error.reason) == ("messages", "empty_array")


# --- messages and content -------------------------------------------------


def test_string_content_becomes_one_text_part() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Really brief."},
        {"role": "user", "content": "Hi", "name": "alice"},
    ]
    assert convert(body(messages=messages)).messages == (
        Message(role="system", content=(TextPart("Be brief."),)),
        Message(role="developer", content=(TextPart("Really brief."),)),
        Message(role="user", content=(TextPart("Hi"),), name="alice"),
    )


def test_content_parts_become_text_and_image_parts() -> None:
    content = [
        {"type": "text", "text": "What is in "},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
        {"type": "text", "text": "and here?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    (message,) = convert(body(messages=[{"role": "user", "content": content}])).messages
    assert message.content == (
        TextPart("What is in "),
        ImagePart(url="https://example.com/a.png", detail="high"),
        TextPart("and here?"),
        ImagePart(url="data:image/png;base64,AAAA", detail="auto"),
    )
    assert message.text == "What is in and here?"


def test_assistant_with_null_content_and_tool_calls() -> None:
    messages = [
        HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"a":1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "search", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "nothing"}]},
    ]
    assert convert(body(messages=messages)).messages[1:] == (
        Message(
            role="assistant",
            content=(),
            tool_calls=(
                ToolCall(id="call_1", name="get_weather", arguments='{"a":1}'),
                ToolCall(id="call_2", name="search", arguments="{}"),
            ),
        ),
        Message(role="tool", content=(TextPart("sunny"),), tool_call_id="call_1"),
        Message(role="tool", content=(TextPart("nothing"),), tool_call_id="call_2"),
    )


def test_legacy_assistant_function_call_and_function_message() -> None:
    messages = [
        HELLO,
        {"role": "assistant", "function_call": {"name": "search", "arguments": '{"q":"x"}'}},
        {"role": "function", "name": "search", "content": "found"},
    ]
    assistant, function = convert(body(messages=messages)).messages[1:]
    assert assistant.tool_calls == (ToolCall(id="", name="search", arguments='{"q":"x"}'),)
    assert function == Message(role="function", content=(TextPart("found"),), name="search")


def test_assistant_may_be_empty() -> None:
    messages = [HELLO, {"role": "assistant", "content": None}]
    assert convert(body(messages=messages)).messages[1] == Message(role="assistant")


def test_tool_message_needs_tool_call_id() -> None:
    messages = [HELLO, {"role": "assistant", "content": "ok"}, {"role": "tool", "content": "sunny"}]
    error = rejected(body(messages=messages))
    assert (error.param, error.reason) == ("messages[2].tool_call_id", "missing_required_parameter")


@pytest.mark.parametrize("content", [None, []])
def test_user_message_needs_content(content: Any) -> None:
    error = rejected(body(messages=[HELLO, {"role": "user", "content": content}]))
    assert (error.param, error.reason) == ("messages[1].content", "missing_required_parameter")


def test_empty_string_content_is_content() -> None:
    (message,) = convert(body(messages=[{"role": "user", "content": ""}])).messages
    assert message.content == (TextPart(""),)


def test_missing_role() -> None:
    error = rejected(body(messages=[HELLO, {"content": "hi"}]))
    assert (error.param, error.reason) == ("messages[1].role", "missing_required_parameter")


def test_invalid_role() -> None:
    error = rejected(body(messages=[{"role": "robot", "content": "hi"}]))
    assert (error.param, error.reason) == ("messages[0].role", "invalid_value")
    assert "'robot'" in error.message
    assert "'developer'" in error.message  # the supported roles are listed


def test_unknown_content_part_type() -> None:
    content = [{"type": "text", "text": "hi"}, {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]
    error = rejected(body(messages=[{"role": "user", "content": content}]))
    assert (error.param, error.reason) == ("messages[0].content[1].type", "invalid_value")
    assert "'input_audio'" in error.message


def test_images_only_in_user_messages() -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    error = rejected(body(messages=[{"role": "system", "content": content}]))
    assert (error.param, error.reason) == ("messages[0].content[0].type", "invalid_value")
    assert "'image_url'" not in error.message.split("Supported values are:")[1]


def test_image_part_needs_url() -> None:
    content = [{"type": "image_url", "image_url": {"detail": "low"}}]
    error = rejected(body(messages=[{"role": "user", "content": content}]))
    assert error.param == "messages[0].content[0].image_url.url"


def test_text_part_needs_text() -> None:
    error = rejected(body(messages=[{"role": "user", "content": [{"type": "text"}]}]))
    assert error.param == "messages[0].content[0].text"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (42, "messages[0].content"),
        ({"type": "text", "text": "hi"}, "messages[0].content"),
        (["hi"], "messages[0].content[0]"),
    ],
)
def test_content_of_the_wrong_type(content: Any, param: str) -> None:
    error = rejected(body(messages=[{"role": "user", "content": content}]))
    assert (error.param, error.reason) == (param, "invalid_type")


# --- stop -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("END", ("END",)),
        (["a", "b", "c", "d"], ("a", "b", "c", "d")),
        (["", "x"], ("x",)),
        ([], ()),
        (None, ()),
    ],
)
def test_stop(stop: Any, expected: tuple[str, ...]) -> None:
    assert convert(body(stop=stop)).stop == expected


def test_stop_too_many() -> None:
    error = rejected(body(stop=["a", "b", "c", "d", "e"]))
    assert (error.param, error.reason) == ("stop", "invalid_value")
    assert "at most 4" in error.message


@pytest.mark.parametrize("stop", [7, ["a", 1], {"a": "b"}, True])
def test_stop_of_the_wrong_type(stop: Any) -> None:
    error = rejected(body(stop=stop))
    assert (error.param, error.reason) == ("stop", "invalid_type")


# --- max_tokens -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70}, 70),
        ({"max_tokens": 50, "max_completion_tokens": 70}, 50),
        ({"max_tokens": 90, "max_completion_tokens": 30}, 30),
    ],
)
def test_the_smaller_token_cap_wins(fields: dict[str, int], expected: int | None) -> None:
    assert convert(body(**fields)).max_tokens == expected


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_token_cap_must_be_positive(name: str) -> None:
    error = rejected(body(**{name: 0}))
    assert (error.param, error.reason) == (name, "integer_below_min_value")
    assert "Expected a value >= 1, but got 0 instead." in error.message


# --- ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "code"),
    [
        ("temperature", -0.1, "decimal_below_min_value"),
        ("temperature", 2.5, "decimal_above_max_value"),
        ("top_p", -0.5, "decimal_below_min_value"),
        ("top_p", 1.01, "decimal_above_max_value"),
        ("n", 0, "integer_below_min_value"),
        ("n", 129, "integer_above_max_value"),
        ("presence_penalty", -2.5, "decimal_below_min_value"),
        ("presence_penalty", 2.01, "decimal_above_max_value"),
        ("frequency_penalty", -3, "decimal_below_min_value"),
        ("frequency_penalty", 2.5, "decimal_above_max_value"),
    ],
)
def test_out_of_range(param: str, value: float, code: str) -> None:
    error = rejected(body(**{param: value}))
    assert (error.param, error.reason) == (param, code)


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("temperature", "1", "a number"),
        ("top_p", True, "a number"),
        ("n", 1.5, "an integer"),
        ("top_k", "3", "an integer"),
        ("presence_penalty", [], "a number"),
        ("frequency_penalty", {}, "a number"),
        ("top_logprobs", 2.5, "an integer"),
        ("max_tokens", "9", "an integer"),
        ("max_completion_tokens", True, "an integer"),
        ("seed", 1.5, "an integer"),
        ("logprobs", 1, "a boolean"),
        ("stream", "true", "a boolean"),
        ("parallel_tool_calls", 0, "a boolean"),
        ("user", 7, "a string"),
        ("reasoning_effort", ["low"], "a string"),
    ],
)
def test_each_scalar_parameter_of_the_wrong_type(param: str, value: Any, expected: str) -> None:
    error = rejected(body(**{param: value}))
    assert (error.param, error.reason) == (param, Reason.INVALID_TYPE)
    assert f"Invalid type for '{param}': expected {expected}" in error.message


def test_null_scalars_are_unset_and_whole_floats_are_integers() -> None:
    request = convert(
        body(temperature=None, n=None, max_tokens=None, parallel_tool_calls=None, seed=None, user=None, stream=None)
    )
    assert (request.temperature, request.n, request.max_tokens, request.parallel_tool_calls) == (None, 1, None, True)
    assert (request.seed, request.user, request.stream) == (None, "", False)
    request = convert(body(n=2.0, top_k=40.0, max_completion_tokens=7.0))
    assert (request.n, request.top_k, request.max_tokens) == (2, 40, 7)
    assert type(request.n) is int and type(request.top_k) is int and type(request.max_tokens) is int


def test_integers_for_number_parameters_become_floats() -> None:
    request = convert(body(temperature=1, top_p=1, presence_penalty=-2, frequency_penalty=2))
    values = (request.temperature, request.top_p, request.presence_penalty, request.frequency_penalty)
    assert values == (1.0, 1.0, -2.0, 2.0) and all(type(value) is float for value in values)


@pytest.mark.parametrize(
    ("param", "field"), [("top_k", "top_k"), ("max_tokens", "max_tokens"), ("max_completion_tokens", "max_tokens")]
)
def test_the_integer_parameters_stop_at_32_bits(param: str, field: str) -> None:
    assert getattr(convert(body(**{param: 2**31 - 1})), field) == 2**31 - 1
    error = rejected(body(**{param: 2**31}))
    assert (error.param, error.reason) == (param, Reason.INTEGER_ABOVE_MAX)
    error = rejected(body(**{param: 0}))
    assert (error.param, error.reason) == (param, Reason.INTEGER_BELOW_MIN)


def test_of_several_wrong_parameters_the_first_wrong_scalar_in_the_body_is_named() -> None:
    assert rejected({"model": "echo-1", "messages": [HELLO], "top_p": 5, "temperature": 5}).param == "top_p"
    assert rejected({"model": "echo-1", "messages": [HELLO], "temperature": 5, "top_p": "x"}).param == "temperature"
    # Scalars before the structured parameters, whatever the body's order.
    assert rejected({"model": "echo-1", "messages": [], "max_tokens": 0}).param == "max_tokens"
    assert rejected({"model": "echo-1", "tools": [None], "user": 7, "messages": [HELLO]}).param == "user"


def test_out_of_range_message_names_the_bound_and_the_value() -> None:
    error = rejected(body(temperature=2.5))
    assert error.message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."
    )


def test_range_bounds_are_inclusive() -> None:
    low = convert(body(temperature=0, top_p=0, n=1, presence_penalty=-2, frequency_penalty=-2))
    high = convert(body(temperature=2, top_p=1, n=128, presence_penalty=2, frequency_penalty=2))
    assert (low.temperature, low.top_p, low.n, low.presence_penalty, low.frequency_penalty) == (0, 0, 1, -2, -2)
    assert (high.temperature, high.top_p, high.n, high.presence_penalty, high.frequency_penalty) == (2, 1, 128, 2, 2)


def test_top_logprobs_requires_logprobs() -> None:
    error = rejected(body(top_logprobs=3))
    assert (error.param, error.reason) == ("top_logprobs", "invalid_value")
    error = rejected(body(top_logprobs=3, logprobs=False))
    assert error.param == "top_logprobs"


def test_top_logprobs_with_logprobs() -> None:
    request = convert(body(logprobs=True, top_logprobs=20))
    assert (request.logprobs, request.top_logprobs) == (True, 20)


def test_top_logprobs_range() -> None:
    error = rejected(body(logprobs=True, top_logprobs=21))
    assert (error.param, error.reason) == ("top_logprobs", "integer_above_max_value")


# --- tools and tool_choice ------------------------------------------------


def test_tools_are_converted() -> None:
    assert convert(body(tools=[WEATHER_TOOL, SEARCH_TOOL])).tools == (
        FunctionTool(
            name="get_weather",
            description="Current weather",
            parameters={"type": "object", "properties": {"location": {"type": "string"}}},
            strict=True,
        ),
        FunctionTool(name="search", description="", parameters={}, strict=False),
    )


def test_tool_type_must_be_function() -> None:
    error = rejected(body(tools=[SEARCH_TOOL, {"type": "retrieval", "function": {"name": "x"}}]))
    assert (error.param, error.reason) == ("tools[1].type", "invalid_value")


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dotted.name"])
def test_tool_name_pattern(name: str) -> None:
    error = rejected(body(tools=[{"type": "function", "function": {"name": name}}]))
    assert error.param == "tools[0].function.name"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ToolChoice("none")),
        ({"tools": [WEATHER_TOOL]}, ToolChoice("auto")),
        ({"tools": [WEATHER_TOOL], "tool_choice": "none"}, ToolChoice("none")),
        ({"tools": [WEATHER_TOOL], "tool_choice": "auto"}, ToolChoice("auto")),
        ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, ToolChoice("required")),
        ({"tools": [WEATHER_TOOL], "tool_choice": None}, ToolChoice("auto")),
        (
            {
                "tools": [SEARCH_TOOL, WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            ToolChoice("function", "get_weather"),
        ),
        ({"tool_choice": "none"}, ToolChoice("none")),
        ({"tool_choice": "auto"}, ToolChoice("auto")),
    ],
)
def test_tool_choice(fields: dict[str, Any], expected: ToolChoice) -> None:
    assert convert(body(**fields)).tool_choice == expected


def test_tool_choice_names_an_unknown_function() -> None:
    data = body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
    error = rejected(data)
    assert (error.param, error.reason) == ("tool_choice", "invalid_value")
    assert "'nope'" in error.message


def test_tool_choice_function_without_name() -> None:
    error = rejected(body(tools=[WEATHER_TOOL], tool_choice={"type": "function"}))
    assert error.param == "tool_choice.function.name"


def test_tool_choice_required_without_tools() -> None:
    error = rejected(body(tool_choice="required"))
    assert error.param == "tool_choice"


@pytest.mark.parametrize("choice", ["always", {"type": "retrieval"}, 3])
def test_tool_choice_invalid(choice: Any) -> None:
    error = rejected(body(tools=[WEATHER_TOOL], tool_choice=choice))
    assert (error.param, error.reason) == ("tool_choice", "invalid_value")


def test_parallel_tool_calls() -> None:
    assert convert(body(tools=[WEATHER_TOOL])).parallel_tool_calls is True
    assert convert(body(tools=[WEATHER_TOOL], parallel_tool_calls=True)).parallel_tool_calls is True
    assert convert(body(tools=[WEATHER_TOOL], parallel_tool_calls=False)).parallel_tool_calls is False


# --- deprecated functions / function_call ---------------------------------

FUNCTIONS = [
    {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}},
    {"name": "other"},
]


def test_functions_become_tools_after_tools() -> None:
    request = convert(body(tools=[SEARCH_TOOL], functions=FUNCTIONS))
    assert request.tools == (
        FunctionTool(name="search"),
        FunctionTool(name="lookup", description="Look up", parameters={"type": "object"}),
        FunctionTool(name="other"),
    )
    assert request.tool_choice == ToolChoice("auto")


@pytest.mark.parametrize(
    ("function_call", "expected"),
    [
        ("none", ToolChoice("none")),
        ("auto", ToolChoice("auto")),
        ({"name": "other"}, ToolChoice("function", "other")),
    ],
)
def test_function_call_becomes_tool_choice(function_call: Any, expected: ToolChoice) -> None:
    assert convert(body(functions=FUNCTIONS, function_call=function_call)).tool_choice == expected


def test_tool_choice_wins_over_function_call() -> None:
    request = convert(body(functions=FUNCTIONS, tool_choice="none", function_call={"name": "lookup"}))
    assert request.tool_choice == ToolChoice("none")


def test_function_call_errors_name_function_call() -> None:
    error = rejected(body(functions=FUNCTIONS, function_call={"name": "missing"}))
    assert (error.param, error.reason) == ("function_call", "invalid_value")
    error = rejected(body(functions=FUNCTIONS, function_call="sometimes"))
    assert (error.param, error.reason) == ("function_call", "invalid_value")


def test_function_name_pattern_in_functions() -> None:
    error = rejected(body(functions=[{"name": "bad name"}]))
    assert error.param == "functions[0].name"


# --- response_format ------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "json_object"])
def test_response_format_simple(kind: str) -> None:
    assert convert(body(response_format={"type": kind})).response_format == ResponseFormat(kind)  # type: ignore[arg-type]


def test_response_format_json_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    data = body(
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    )
    assert convert(data).response_format == ResponseFormat("json_schema", name="reply", schema=schema, strict=True)


def test_response_format_json_schema_without_schema() -> None:
    data = body(response_format={"type": "json_schema", "json_schema": {"name": "reply"}})
    assert convert(data).response_format == ResponseFormat("json_schema", name="reply", schema={}, strict=False)


@pytest.mark.parametrize("json_schema", [None, {"schema": {"type": "object"}}])
def test_response_format_json_schema_needs_name(json_schema: dict[str, Any] | None) -> None:
    format_: dict[str, Any] = {"type": "json_schema"}
    if json_schema is not None:
        format_["json_schema"] = json_schema
    error = rejected(body(response_format=format_))
    assert (error.param, error.reason) == ("response_format.json_schema.name", "missing_required_parameter")


def test_response_format_unknown_type() -> None:
    error = rejected(body(response_format={"type": "xml"}))
    assert (error.param, error.reason) == ("response_format.type", "invalid_value")


# --- streaming ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "stream", "include_usage"),
    [
        ({}, False, False),
        ({"stream": False}, False, False),
        ({"stream": True}, True, False),
        ({"stream": True, "stream_options": {}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": False}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
    ],
)
def test_stream_and_include_usage(fields: dict[str, Any], stream: bool, include_usage: bool) -> None:
    request = convert(body(**fields))
    assert (request.stream, request.include_usage) == (stream, include_usage)


@pytest.mark.parametrize("fields", [{}, {"stream": False}])
def test_stream_options_need_stream(fields: dict[str, Any]) -> None:
    error = rejected(body(stream_options={"include_usage": True}, **fields))
    assert error.param == "stream_options"


# --- logit_bias -----------------------------------------------------------


def test_logit_bias() -> None:
    assert convert(body(logit_bias={"50256": -100, "15": 2.5, "7": 100})).logit_bias == {
        "50256": -100.0,
        "15": 2.5,
        "7": 100.0,
    }


@pytest.mark.parametrize("key", ["hello", "-1", "1.5", ""])
def test_logit_bias_key_must_be_a_token_id(key: str) -> None:
    error = rejected(body(logit_bias={key: 1}))
    assert (error.param, error.reason) == ("logit_bias", "invalid_value")


@pytest.mark.parametrize(
    ("field", "value", "param", "expected"),
    [
        ("logit_bias", {"15": 1, "42": None}, "logit_bias.42", "a number"),
        ("metadata", {"team": "a", "stage": None}, "metadata.stage", "a string"),
    ],
)
def test_a_null_inside_a_map_is_an_invalid_type(field: str, value: dict[str, Any], param: str, expected: str) -> None:
    """Null unsets a parameter; inside logit_bias or metadata it is a wrong value, refused as an invalid type."""
    error = rejected(body(**{field: value}))
    assert (error.param, error.reason) == (param, "invalid_type")
    assert error.message == f"Invalid type for '{param}': expected {expected}, but got null instead."


@pytest.mark.parametrize(("weight", "code"), [(100.5, "decimal_above_max_value"), (-101, "decimal_below_min_value")])
def test_logit_bias_weight_range(weight: float, code: str) -> None:
    error = rejected(body(logit_bias={"15": 1, "42": weight}))
    assert (error.param, error.reason) == ("logit_bias.42", code)


# --- passed through -------------------------------------------------------


def test_passed_through() -> None:
    request = convert(
        body(
            metadata={"team": "search", "ticket": "T-1"},
            user="user-123",
            seed=2**40,
            temperature=0.7,
            top_p=0.9,
            n=3,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            reasoning_effort="low",
        )
    )
    assert request.metadata == {"team": "search", "ticket": "T-1"}
    assert request.user == "user-123"
    assert request.seed == 2**40
    assert (request.temperature, request.top_p, request.n) == (0.7, 0.9, 3)
    assert (request.presence_penalty, request.frequency_penalty) == (0.5, -0.5)
    assert request.reasoning_effort == "low"


def test_seed_zero_is_kept() -> None:
    assert convert(body(seed=0)).seed == 0


# --- types are checked here -----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"temperature": "hot"}, "temperature", "expected a number, but got a string instead."),
        ({"n": 1.5}, "n", "expected an integer, but got a number instead."),
        ({"n": True}, "n", "expected an integer, but got a boolean instead."),
        ({"stream": "yes"}, "stream", "expected a boolean, but got a string instead."),
        ({"model": 7}, "model", "expected a string, but got an integer instead."),
        ({"messages": {"role": "user"}}, "messages", "expected an array, but got an object instead."),
        ({"tools": [None]}, "tools[0]", "expected an object, but got null instead."),
        ({"metadata": {"a": 1}}, "metadata.a", "expected a string, but got an integer instead."),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage",
         "expected a boolean, but got an integer instead."),
    ],
)  # fmt: skip
def test_wrong_types_name_the_param_and_both_types(fields: dict[str, Any], param: str, message: str) -> None:
    error = rejected(body(**fields))
    assert (error.param, error.reason) == (param, Reason.INVALID_TYPE)
    assert error.message == f"Invalid type for '{param}': {message}"


def test_messages_entry_of_the_wrong_type() -> None:
    error = rejected(body(messages=["hi"]))
    assert error.message == "Invalid type for 'messages[0]': expected an object, but got a string instead."


def test_an_integral_number_is_an_integer() -> None:
    assert convert(body(n=2.0, max_tokens=10.0)).n == 2


def test_an_integer_for_a_number_param_is_a_decimal_in_range_errors() -> None:
    error = rejected(body(temperature=3))
    assert error.reason is Reason.DECIMAL_ABOVE_MAX
    assert error.message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead."
    )
    assert convert(body(temperature=1)).temperature == 1.0


def test_body_that_is_not_an_object() -> None:
    error = rejected([HELLO])
    assert (error.reason, error.param) == (Reason.INVALID_BODY, None)


# --- raw bodies -----------------------------------------------------------


def test_parse_chat_body_reads_json() -> None:
    raw = b'{"model":"echo-1","messages":[{"role":"user","content":"Hello"}],"temperature":0.5}'
    assert parse_chat_body(raw) == convert(body(temperature=0.5))


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"model": "m",}'])
def test_parse_chat_body_rejects_bad_json(raw: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_chat_body(raw)
    assert caught.value.reason is Reason.INVALID_BODY
    assert caught.value.http_status == 400
    assert caught.value.message.startswith("We could not parse the JSON body of your request.")


def test_parse_chat_body_rejects_a_json_array() -> None:
    with pytest.raises(GatewayError) as caught:
        parse_chat_body(b"[]")
    assert caught.value.reason is Reason.INVALID_BODY
    assert caught.value.message == "We could not parse the JSON body of your request: expected a JSON object."


# --- extra and routing ----------------------------------------------------


def test_uninterpreted_fields_pass_through_in_extra() -> None:
    request = convert(body(service_tier="flex", top_k=40, prediction={"type": "content", "content": "x"}))
    assert request.extra == {"service_tier": "flex", "top_k": 40, "prediction": {"type": "content", "content": "x"}}


def test_interpreted_fields_are_not_in_extra() -> None:
    request = convert(body(temperature=1, stream=True, provider={"sort": "price"}, reasoning_effort="low"))
    assert request.extra == {}


def test_provider_preferences() -> None:
    provider = {"order": ["b", "a"], "only": ["a", "b"], "ignore": ["c"], "allow_fallbacks": False, "sort": "latency"}
    assert convert(body(provider=provider)).routing == RoutingPreferences(
        order=("b", "a"), allow_fallbacks=False, sort="latency", only=("a", "b"), ignore=("c",)
    )
    assert convert(body(provider={})).routing == RoutingPreferences()


def test_provider_preferences_are_checked() -> None:
    error = rejected(body(provider={"sort": "cheapest"}))
    assert (error.param, error.reason) == ("provider.sort", Reason.INVALID_VALUE)
    error = rejected(body(provider={"order": ["a", 1]}))
    assert (error.param, error.reason) == ("provider.order", Reason.INVALID_TYPE)
    error = rejected(body(provider="openai"))
    assert (error.param, error.reason) == ("provider", Reason.INVALID_TYPE)
