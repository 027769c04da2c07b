"""OpenAI Images API translation, and one real round trip per response format through the HTTP provider."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from modelway.config import ProviderConfig
from modelway.core.types import GeneratedImage, ImageRequest
from modelway.errors import GatewayError, Reason
from modelway.providers.base import Upstream
from modelway.providers.http import HttpProvider, Transport
from modelway.providers.openai import OpenAITranslator
from modelway.providers.openai_images import OpenAIImageTranslator, image_request_to_openai
from tests.fakes import openai as fake
from tests.fakes.server import FakeUpstream, Json

UPSTREAM = Upstream("https://api.openai.com/v1", "dall-e-3", "sk-secret", {"OpenAI-Organization": "org-1"})


def test_request_url_headers_and_body() -> None:
    request = ImageRequest(
        model="painter", prompt="a red fox", n=2, size="1792x1024", quality="hd", style="vivid", user="u-1",
        response_format="b64_json", extra={"moderation": "low"},
    )  # fmt: skip
    http = OpenAIImageTranslator(request, UPSTREAM).request()
    assert http.url == "https://api.openai.com/v1/images/generations"
    assert http.headers["Authorization"] == "Bearer sk-secret"
    assert http.headers["OpenAI-Organization"] == "org-1"
    assert not http.streaming
    assert orjson.loads(http.body) == {
        "moderation": "low",
        "model": "dall-e-3",
        "prompt": "a red fox",
        "n": 2,
        "size": "1792x1024",
        "quality": "hd",
        "response_format": "b64_json",
        "style": "vivid",
        "user": "u-1",
    }
    assert "sk-secret" not in repr(http)


def test_extra_never_overrides_what_the_gateway_models() -> None:
    body = image_request_to_openai(ImageRequest(model="m", prompt="p", extra={"model": "x", "n": 9}), "dall-e-3")
    assert (body["model"], body["n"]) == ("dall-e-3", 1)


def test_answers_in_both_formats() -> None:
    translator = OpenAIImageTranslator(ImageRequest(model="m", prompt="fox"), UPSTREAM)
    url = translator.json_body(orjson.dumps(fake.images_json("fox", n=2)))
    assert url == (GeneratedImage(url="https://images.example/img-1.png", revised_prompt="A picture of fox"),) * 2
    b64 = translator.json_body(orjson.dumps(fake.images_json("fox", response_format="b64_json")))
    assert b64 == (GeneratedImage(b64_json=fake.PNG_B64, revised_prompt="A picture of fox"),)


@pytest.mark.parametrize("body", [b"<html>", b"{}", b'{"data": []}', b'{"data": [{"revised_prompt": "x"}]}', b"[1]"])
def test_malformed_answers(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        OpenAIImageTranslator(ImageRequest(model="m", prompt="p"), UPSTREAM).json_body(body)
    assert (caught.value.reason, caught.value.retryable) == (Reason.PROVIDER_ERROR, True)


def test_errors_read_as_chat_completions_errors() -> None:
    body = orjson.dumps(fake.error_json("Your request was rejected by the safety system.", param="prompt"))
    image_error = OpenAIImageTranslator(ImageRequest(model="m", prompt="p"), UPSTREAM).error(400, {}, body)
    assert image_error.reason is Reason.UPSTREAM_REJECTED
    assert image_error.message == "Your request was rejected by the safety system."


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = fake.start()
    yield server
    server.stop()


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[HttpProvider]:
    upstream.reset()
    transport = Transport()
    await transport.start()
    config = ProviderConfig(name="oai", kind="openai", base_url=upstream.base_url + "/v1", api_key="sk-up")
    yield HttpProvider(config, OpenAITranslator, transport, images=OpenAIImageTranslator)
    await transport.close()


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
async def test_round_trip_through_the_transport(
    upstream: FakeUpstream, provider: HttpProvider, response_format: str
) -> None:
    request = ImageRequest(model="painter", prompt="a fox", n=2, response_format=response_format)  # type: ignore[arg-type]
    images = await provider.generate_images(request, "dall-e-3", timeout=10)
    assert len(images) == 2
    if response_format == "b64_json":
        assert base64.b64decode(images[0].b64_json).startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert images[0].url.startswith("https://")
    (sent,) = upstream.requests
    assert (sent.path, sent.headers["authorization"], sent.json["model"]) == (
        "/v1/images/generations",
        "Bearer sk-up",
        "dall-e-3",
    )


async def test_upstream_billing_limit_is_the_operators_problem(upstream: FakeUpstream, provider: HttpProvider) -> None:
    upstream.script(
        Json(fake.error_json("Billing hard limit has been reached.", code="billing_hard_limit_reached"), status=400)
    )
    with pytest.raises(GatewayError) as caught:
        await provider.generate_images(ImageRequest(model="painter", prompt="x"), "dall-e-3", timeout=10)
    assert (caught.value.reason, caught.value.http_status, caught.value.retryable) == (
        Reason.PROVIDER_ERROR,
        502,
        False,
    )
    assert "Billing" not in caught.value.message


async def test_a_kind_without_images_says_so(upstream: FakeUpstream) -> None:
    config = ProviderConfig(name="oai", kind="openai", base_url=upstream.base_url + "/v1")
    provider = HttpProvider(config, OpenAITranslator, Transport())
    with pytest.raises(GatewayError) as caught:
        await provider.generate_images(ImageRequest(model="chatty", prompt="x"), "gpt", timeout=10)
    assert (caught.value.reason, caught.value.param) == (Reason.INVALID_VALUE, "model")
