"""The core's own errors advise in each surface's words (its Wording): how to send a key, what to lower."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from modelway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    gemini_pb2,
    gemini_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import request

IMAGE_MODEL = """
[[models]]
id = "echo-image"
provider = "echo"
type = "image"
credits_per_image = 2.5
"""

CHAT = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"parts": [{"text": "hi"}]}]}
IMAGE = {"model": "echo-image", "prompt": "a red square", "size": "256x256"}


@pytest.fixture(scope="module")
def broke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A stack, and a key whose account has no credits."""
    with running_stack(tmp_path_factory.mktemp("wording"), TEST_CONFIG + IMAGE_MODEL) as stack:
        account = stack.create_account("broke", credits=0)
        _, key = stack.create_key("broke-key", account)
        yield stack, key


def message(reply: Any) -> str:
    body = reply.json()
    return str(body["error"]["message"] if "error" in body else body["message"])


def test_a_missing_key_is_explained_in_each_surface_s_header(broke: tuple[Stack, str]) -> None:
    stack, _ = broke
    port = stack.http_port
    for path, body in (
        ("/api/v1beta/models/echo-1:generateContent", GEMINI),
        ("/api/v1beta/models/echo-1:streamGenerateContent?alt=sse", GEMINI),
    ):
        reply = request(port, "POST", path, body, {})
        assert reply.status == 401
        text = message(reply)
        assert "x-goog-api-key" in text and "?key=" in text and "Bearer" not in text, text
    reply = request(port, "GET", "/api/v1beta/models", None, {})
    assert reply.status == 401 and "x-goog-api-key" in message(reply) and "Bearer" not in message(reply)
    for path, body in (
        ("/api/v1/chat/completions", CHAT),
        ("/api/v1/ai/chat", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/api/v1/images/generations", IMAGE),
    ):
        reply = request(port, "POST", path, body, {})
        assert reply.status == 401
        assert "Authorization: Bearer" in message(reply), (path, reply.body)


def test_the_credits_error_names_the_surface_s_own_parameter(broke: tuple[Stack, str]) -> None:
    stack, key = broke
    port = stack.http_port
    bearer = {"Authorization": f"Bearer {key}"}

    reply = request(port, "POST", "/api/v1beta/models/echo-1:generateContent", GEMINI, {"x-goog-api-key": key})
    assert (reply.status, reply.json()["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert message(reply).endswith("Add credits or lower generationConfig.maxOutputTokens."), reply.body
    assert "max_tokens" not in message(reply)

    reply = request(port, "POST", "/api/v1/images/generations", IMAGE, bearer)
    assert (reply.status, reply.json()["error"]["code"]) == (429, "insufficient_quota")
    assert message(reply).endswith("ask for fewer images (n) or standard quality."), reply.body
    assert "max_tokens" not in message(reply)

    reply = request(port, "POST", "/api/v1/chat/completions", CHAT, bearer)
    assert reply.status == 429 and message(reply).endswith("Add credits or lower max_tokens."), reply.body

    native = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    reply = request(port, "POST", "/api/v1/ai/chat", native, bearer)
    assert (reply.status, reply.json()["error"]["code"]) == (402, "INSUFFICIENT_CREDITS")
    assert message(reply).endswith("Add credits or lower max_tokens."), reply.body

    # chat/send keeps its documented fixed words.
    reply = request(port, "POST", "/api/v1/chat/send", {"model_id": "echo-1", "message": "hi"}, {"X-API-Key": key})
    assert (reply.status, reply.json()) == (429, {"success": False, "message": "No points remaining"})


def test_typed_grpc_callers_are_told_to_send_the_key_as_metadata(broke: tuple[Stack, str]) -> None:
    """A typed gRPC call has no query string and no HTTP headers of its own: the missing-key error names
    metadata, and never Gemini's `?key=` or an HTTP header. The REST twins keep their own words."""
    stack, key = broke
    chat = chat_pb2.CreateChatCompletionRequest(model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text="hi")])
    gemini = gemini_pb2.GenerateContentRequest(
        model="echo-1", contents=[gemini_pb2.GeminiContent(role="user", parts=[gemini_pb2.GeminiPart(text="hi")])]
    )
    image = images_pb2.GenerateImagesRequest(model="echo-image", prompt="a red square", size="256x256")
    with grpc.insecure_channel(stack.envoy_target) as channel:
        calls = (
            lambda: chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(chat, timeout=10),
            lambda: gemini_pb2_grpc.GeminiServiceStub(channel).GenerateContent(gemini, timeout=10),
            lambda: images_pb2_grpc.ImagesServiceStub(channel).GenerateImages(image, timeout=10),
            lambda: models_pb2_grpc.ModelsServiceStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            details = raised.value.details() or ""
            assert "metadata" in details and "?key=" not in details and "header" not in details, details
        with pytest.raises(grpc.RpcError) as raised:
            gemini_pb2_grpc.GeminiServiceStub(channel).GenerateContent(gemini, timeout=10)
        assert "x-goog-api-key" in (raised.value.details() or "")
        # The typed image call's credits error speaks of images, as its REST twin's does.
        with pytest.raises(grpc.RpcError) as raised:
            images_pb2_grpc.ImagesServiceStub(channel).GenerateImages(
                image, metadata=(("authorization", f"Bearer {key}"),), timeout=10
            )
        assert (raised.value.details() or "").endswith("ask for fewer images (n) or standard quality.")
    reply = request(stack.http_port, "GET", "/api/v1/models", None, {})
    assert reply.status == 401 and "Authorization: Bearer" in message(reply), reply.body
