"""The Images API request validator and response rendering, with literal bodies."""

from __future__ import annotations

import orjson
import pytest

from modelway.core.types import GeneratedImage, ImageRequest
from modelway.errors import GatewayError, Reason
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_images import OPENAI_IMAGES, images_json, parse_images_body, parse_images_request

# An extra field nested past the 64 levels any value may have.
DEEP: list[object] = []
for _ in range(70):
    DEEP = [DEEP]


def test_unset_options_stay_unset_and_extras() -> None:
    # Nothing the caller left out is filled in: an upstream gets only what the caller set.
    request = parse_images_request({"prompt": "a fox", "moderation": "low"})
    assert request == ImageRequest(model="", prompt="a fox", n=1, extra={"moderation": "low"})
    assert (request.size, request.quality, request.response_format, request.wants_url) == ("", "", "", True)


def test_every_parameter() -> None:
    body = {
        "model": "echo-image", "prompt": "p", "n": 4, "size": "1024x1792", "quality": "hd",
        "response_format": "b64_json", "style": "natural", "user": "u-1",
    }  # fmt: skip
    request = parse_images_request(body)
    assert (request.model, request.n, request.size, request.quality) == ("echo-image", 4, "1024x1792", "hd")
    assert (request.response_format, request.style, request.user, request.extra) == ("b64_json", "natural", "u-1", {})


def test_prompt_length_is_counted_in_characters() -> None:
    assert parse_images_request({"prompt": "é" * 4000}).prompt == "é" * 4000
    with pytest.raises(GatewayError) as raised:
        parse_images_request({"prompt": "é" * 4001})
    assert (raised.value.reason, raised.value.param) == (Reason.STRING_ABOVE_MAX_LENGTH, "prompt")
    assert OPENAI_IMAGES.error_response(raised.value)[0] == 400


@pytest.mark.parametrize(
    ("body", "reason", "param"),
    [
        ({}, Reason.MISSING_REQUIRED_PARAMETER, "prompt"),
        ({"prompt": "  "}, Reason.INVALID_VALUE, "prompt"),
        ({"prompt": 5}, Reason.INVALID_TYPE, "prompt"),
        ({"prompt": "p", "n": 1.5}, Reason.INVALID_TYPE, "n"),
        ({"prompt": "p", "n": True}, Reason.INVALID_TYPE, "n"),
        ({"prompt": "p", "size": "1024X1024"}, Reason.INVALID_VALUE, "size"),
        ({"prompt": "p", "style": "loud"}, Reason.INVALID_VALUE, "style"),
        ({"prompt": "p", "model": ["echo-image"]}, Reason.INVALID_TYPE, "model"),
        ({"prompt": "p", "x": DEEP}, Reason.NESTED_TOO_DEEPLY, "x"),
    ],
)
def test_bad_values(body: dict[str, object], reason: Reason, param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_images_request(body)
    assert (raised.value.reason, raised.value.param) == (reason, param)


def test_not_an_object() -> None:
    for raw in (b"[1]", b"nope"):
        with pytest.raises(GatewayError) as raised:
            parse_images_body(raw)
        assert raised.value.reason == Reason.INVALID_BODY


def test_rendering_shows_url_or_b64_and_revised_prompt_when_known() -> None:
    images = (
        GeneratedImage(url="https://x/1.png", revised_prompt="a fox, painted"),
        GeneratedImage(b64_json="iVBOR"),
    )
    assert orjson.loads(images_json(1767225600, images)) == {
        "created": 1767225600,
        "data": [{"url": "https://x/1.png", "revised_prompt": "a fox, painted"}, {"b64_json": "iVBOR"}],
    }


def test_errors_are_the_openai_dialects() -> None:
    error = GatewayError(Reason.RATE_LIMITED, "slow down")
    assert OPENAI_IMAGES.error_response(error) == OPENAI.error_response(error)
    assert OPENAI_IMAGES.name == "openai-images"
