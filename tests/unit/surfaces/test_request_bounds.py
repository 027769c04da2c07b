"""The bounds on one chat body (message count, nesting), quoted values clipped, and hypothesis over
every field: whatever the JSON, parsing either succeeds or raises a GatewayError naming a param."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelway.errors import GatewayError, Reason
from modelway.surfaces.grpc import chat_request_from_proto
from modelway.surfaces.openai_request import MAX_DEPTH, MAX_MESSAGES, parse_chat_body, parse_chat_request
from modelway.v1 import chat_pb2

HELLO = {"role": "user", "content": "Hello"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [HELLO], **fields}


def refused(data: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_chat_request(data)
    return caught.value


def test_at_most_2048_messages() -> None:
    assert len(parse_chat_request(body(messages=[HELLO] * MAX_MESSAGES)).messages) == MAX_MESSAGES
    error = refused(body(messages=[HELLO] * (MAX_MESSAGES + 1)))
    assert error.reason is Reason.ARRAY_TOO_LONG and error.param == "messages"
    assert error.message == (
        "Invalid 'messages': array too long. Expected an array with maximum length 2048, "
        "but got an array with length 2049 instead."
    )


def test_the_message_count_is_checked_before_the_messages() -> None:
    # 3,000 invalid messages: the count is what is reported, not the first bad message.
    assert refused(body(messages=[1] * 3000)).reason is Reason.ARRAY_TOO_LONG


def nested(depth: int) -> Any:
    """`depth` arrays, one in another."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["stop", "tools", "metadata", "response_format", "vendor_extension"])
def test_nesting_deeper_than_the_limit_names_the_field(field: str) -> None:
    error = refused(body(**{field: nested(MAX_DEPTH + 1)}))
    assert error.reason is Reason.NESTED_TOO_DEEPLY and error.param == field
    assert f"Invalid '{field}': nested too deeply" in error.message


def test_nesting_at_the_limit_is_fine() -> None:
    assert parse_chat_request(body(vendor_extension=nested(MAX_DEPTH))).extra["vendor_extension"]


def test_depth_far_past_the_recursion_limit() -> None:
    text = '{"model":"m","messages":[{"role":"user","content":"x"}],"x":' + "[" * 1000 + "]" * 1000 + "}"
    with pytest.raises(GatewayError) as caught:
        parse_chat_body(text.encode())
    assert caught.value.reason is Reason.NESTED_TOO_DEEPLY and caught.value.param == "x"
    # The walk is iterative: a value nested past Python's recursion limit is measured too.
    assert refused(body(x=nested(5000))).reason is Reason.NESTED_TOO_DEEPLY


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"1": {"a": 1}}}, "logit_bias.1"),
        ({"metadata": {"k": {"b": 1}}}, "metadata.k"),
        ({"model": "m", "tool_choice": {"type": "function", "function": {"name": "x" * 10_000}}}, "tool_choice"),
    ],
)
def test_wrong_shapes_name_the_param(fields: dict[str, Any], param: str) -> None:
    error = refused(body(**fields))
    assert error.param == param and error.http_status == 400
    assert len(error.message) < 600


def test_long_values_are_clipped_in_messages() -> None:
    error = refused(body(messages=[{"role": "r" * 100_000, "content": "x"}]))
    assert len(error.message) < 600 and "\u2026" in error.message
    error = refused(body(logit_bias={"9" * 100_000: "x"}))
    assert len(error.message) < 600 and error.param is not None and len(error.param) <= 256


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
FIELDS = [
    "model", "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "metadata",
    "reasoning_effort", "functions", "function_call", "provider",
]  # fmt: skip
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "x"])},
    optional={
        "content": json_values
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url"])},
                optional={"text": json_values, "image_url": json_values},
            ),
            max_size=3,
        ),
        "tool_calls": st.lists(
            st.fixed_dictionaries({}, optional={"id": json_values, "function": json_values}), max_size=2
        )
        | json_values,
        "tool_call_id": json_values,
        "name": json_values,
        "function_call": json_values,
    },
)
bodies = st.fixed_dictionaries(
    {"model": st.just("m") | json_values, "messages": st.lists(message, max_size=3) | json_values},
    optional={field: json_values for field in FIELDS[2:]},
)


@settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(bodies)
def test_any_body_parses_or_is_a_400_naming_a_param(data: dict[str, Any]) -> None:
    try:
        parse_chat_request(data)
    except GatewayError as error:
        assert error.http_status == 400, error
        assert error.message and "Traceback" not in error.message
        assert len(error.message) <= 2048


@settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(
        st.text(max_size=5),
        st.none() | st.floats() | st.text(max_size=5) | st.booleans() | st.lists(st.floats(), max_size=3),
        max_size=5,
    ),
    st.floats(),
    st.integers(-(2**31), 2**31 - 1),
)
def test_any_typed_request_converts_or_is_a_400(parameters: dict[str, Any], temperature: float, n: int) -> None:
    """The native request: NaN/inf numbers in Structs and doubles, any n, never anything but a 400."""
    request = chat_pb2.CreateChatCompletionRequest(
        model="m", messages=[chat_pb2.ChatMessage(role="user", text="hi")], temperature=temperature, n=n
    )
    tool = request.tools.add()
    tool.type = "function"
    tool.function.name = "f"
    struct = struct_pb2.Struct()
    for key, value in parameters.items():
        struct[key] = value
    tool.function.parameters.CopyFrom(struct)
    try:
        chat_request_from_proto(request)
    except GatewayError as error:
        assert error.http_status == 400, error
