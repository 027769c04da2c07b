"""The official openai SDK, unmodified, against Envoy in front of modelway."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Stack

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0, _strict_response_validation=True
    )


@pytest.fixture
def async_client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0, _strict_response_validation=True
    )


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_non_stream_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo-1", messages=user("Hello there"))
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "echo-1"
    assert isinstance(completion.created, int)
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: Hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4  # "Echo", ":", " Hello", " there"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_assembles_to_the_same_text(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="echo-1", messages=user("one two three"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1


def test_stream_with_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="echo-1", messages=user("count me"), stream=True, stream_options={"include_usage": True}
        )
    )
    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 4
    assert all(chunk.usage is None for chunk in content)
    assert content[-1].choices[0].finish_reason == "stop"


def test_n_two_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo-1", messages=user("twice"), n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == "Echo: twice" for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 2 * 3


def test_stop_sequence(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-1", messages=user("alpha beta gamma"), stop=[" gamma", "zz"]
    )
    assert completion.choices[0].message.content == "Echo: alpha beta"
    assert completion.choices[0].finish_reason == "stop"


def test_max_tokens_gives_finish_reason_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo-1", messages=user("a b c d e f g"), max_tokens=3)
    assert completion.choices[0].message.content == "Echo: a"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_model_output_cap_applies_without_max_tokens(client: openai.OpenAI) -> None:
    # echo-mini is configured with max_output_tokens = 8.
    completion = client.chat.completions.create(model="echo-mini", messages=user("w " * 20))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 8


def test_forced_tool_call_matches_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-1",
        messages=user("What's the weather in Paris?"),
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit", "days"}
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["days"], int) and arguments["days"] >= 1


def test_streamed_tool_call_arguments_assemble(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="echo-1",
            messages=user("weather please"),
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            stream=True,
        )
    )
    pieces = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert set(json.loads(arguments)) == {"city", "unit", "days"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="echo-1",
        messages=user("Is the sky blue?"),
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
    )
    value = json.loads(completion.choices[0].message.content or "")
    assert isinstance(value["answer"], str) and isinstance(value["confidence"], (int, float))


def test_json_object_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-1", messages=user("give json"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["echo-1", "echo-mini", "echo-slow"]
    model = client.models.retrieve("echo-1")
    assert (model.id, model.object, model.created, model.owned_by) == ("echo-1", "model", 1767225600, "modelway")


def test_authentication_error(stack: Stack) -> None:
    bad = openai.OpenAI(base_url=f"{stack.http_base}/api/v1", api_key="mwt-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="echo-1", messages=user("hi"))
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nope", messages=user("hi"))
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"n": 0}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_request_names_the_param(client: openai.OpenAI, overrides: dict[str, object], param: str) -> None:
    arguments: dict[str, object] = {"model": "echo-1", "messages": user("hi"), **overrides}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**arguments)  # type: ignore[call-overload]
    assert caught.value.status_code == 400
    assert caught.value.param == param
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"


async def test_async_client_non_stream_and_stream(async_client: openai.AsyncOpenAI) -> None:
    completion = await async_client.chat.completions.create(model="echo-1", messages=user("async hello"))
    assert completion.choices[0].message.content == "Echo: async hello"
    stream = await async_client.chat.completions.create(model="echo-1", messages=user("async stream"), stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "Echo: async stream"
    await async_client.close()
