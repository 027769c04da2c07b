"""Every OpenAI-shaped body the gateway sends, fetched through Envoy, against OpenAI's published OpenAPI schema;
and model ids with `:` or `/`, which reach the server percent-encoded in paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.http import Reply, request
from tests.e2e.image_stack import ImageStack, image_stack
from tests.openai_schema import schema_errors, validate

CHAT = "/api/v1/chat/completions"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStack]:
    with image_stack(tmp_path_factory.mktemp("schema")) as started:
        yield started


def call(images: ImageStack, method: str, path: str, body: Any = None, *, key: str | None = None) -> Reply:
    headers = {} if key == "" else {"Authorization": f"Bearer {key or images.stack.api_key}"}
    return request(images.stack.http_port, method, path, body, headers)


def frames(reply: Reply) -> list[Any]:
    """The JSON of every `data:` event of an SSE answer, [DONE] left out."""
    events = [line.removeprefix("data: ") for line in reply.body.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_the_check_catches_what_the_schema_forbids() -> None:
    """The validator really reads the schema: the gateway's old `system_fingerprint: null` fails it."""
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
    assert schema_errors("CreateChatCompletionResponse", completion) == []
    assert schema_errors("CreateChatCompletionResponse", {**completion, "system_fingerprint": None}) == [
        "system_fingerprint: None is not of type 'string'"
    ]
    assert schema_errors("ErrorResponse", {"error": {"message": "m", "type": "t", "code": None}}) == [
        "error: 'param' is a required property"
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": "Hello"}], "n": 2, "max_tokens": 1},
        {"messages": [{"role": "user", "content": "weather in Paris, use the tool"}], "tools": [TOOL]},
        {"messages": [{"role": "user", "content": "json"}], "response_format": {"type": "json_object"}},
    ],
)
def test_chat_completions_and_chunks(images: ImageStack, body: dict[str, Any]) -> None:
    reply = call(images, "POST", CHAT, {"model": "echo-1", **body})
    assert reply.status == 200
    validate("CreateChatCompletionResponse", reply.json())
    assert "system_fingerprint" not in reply.json()
    for options in ({}, {"stream_options": {"include_usage": True}}):
        streamed = call(images, "POST", CHAT, {"model": "echo-1", **body, "stream": True, **options})
        assert streamed.status == 200
        chunks = frames(streamed)
        for chunk in chunks:
            validate("CreateChatCompletionStreamResponse", chunk)
            assert "system_fingerprint" not in chunk
        if options:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("method", "path", "body", "key", "status"),
    [
        ("POST", CHAT, b"{oops", None, 400),  # the server's parser
        ("POST", CHAT, {"model": "echo-1", "messages": "hi"}, None, 400),
        ("POST", CHAT, {"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "n": "two"}, None, 400),
        ("POST", CHAT, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, None, 404),
        ("POST", CHAT, {"model": "echo-1", "messages": []}, "", 401),
        ("POST", CHAT, {"model": "echo-1", "messages": []}, "mwt-not-a-key", 401),
        ("GET", "/api/v1/models/nope", None, None, 404),
        ("GET", "/api/v1/nothing-here", None, None, 404),  # Envoy's own reply
        ("POST", "/api/v1/api-keys", {"name": 5}, None, 400),  # the transcoder's type check
        ("POST", "/api/v1/images/generations", {"prompt": "p", "size": "1x1"}, None, 400),
        ("GET", "/api/v1/images/files/none.png", None, None, 404),
    ],
)
def test_errors(images: ImageStack, method: str, path: str, body: Any, key: str | None, status: int) -> None:
    reply = call(images, method, path, body, key=key)
    assert reply.status == status
    validate("ErrorResponse", reply.json())


def test_models_and_model_list(images: ImageStack) -> None:
    listed = call(images, "GET", "/api/v1/models").json()
    validate("ListModelsResponse", listed)
    for model in listed["data"]:
        validate("Model", call(images, "GET", "/api/v1/models/" + model["id"]).json())


def test_image_responses(images: ImageStack) -> None:
    for body in (
        {"model": "echo-image", "prompt": "schema", "size": "256x256"},
        {"model": "echo-image", "prompt": "schema", "size": "256x256", "response_format": "b64_json", "n": 2},
        {"model": "dall-e-3", "prompt": "schema"},
        {"model": "dall-e-3", "prompt": "schema", "response_format": "b64_json"},
    ):
        reply = call(images, "POST", "/api/v1/images/generations", body)
        assert reply.status == 200
        validate("ImagesResponse", reply.json())


# --- model ids with ':' and '/' -------------------------------------------------


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("ft%3Agpt-4o-mini%3Aorg%3Acustom%3Aid", "ft:gpt-4o-mini:org:custom:id"),
        ("ft:gpt-4o-mini:org:custom:id", "ft:gpt-4o-mini:org:custom:id"),
        ("meta-llama%2FLlama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
    ],
)
def test_model_ids_are_decoded_from_the_path(images: ImageStack, path: str, model: str) -> None:
    reply = call(images, "GET", "/api/v1/models/" + path)
    assert reply.status == 200, reply.body
    assert reply.json()["id"] == model
    validate("Model", reply.json())


def test_sdk_retrieves_and_chats_with_such_models(images: ImageStack) -> None:
    stack = images.stack
    with openai.OpenAI(
        base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0, _strict_response_validation=True
    ) as client:
        for model in ("ft:gpt-4o-mini:org:custom:id", "meta-llama/Llama-3.1-8B"):
            assert client.models.retrieve(model).id == model
            answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert answer.model == model
    reply = call(images, "GET", "/api/v1/models/ft%3Anot%3Athere")
    assert reply.status == 404
    assert (
        reply.json()["error"]["message"] == "The model `ft:not:there` does not exist or you do not have access to it."
    )
