"""The OpenAI Images API surface: a `POST /images/generations` body in, the images JSON out, in OpenAI's words.

https://platform.openai.com/docs/api-reference/images/create. Errors use the
OpenAI dialect's table (surfaces/openai.py); only the usage rows' surface name
differs ("openai-images"), so image calls can be told apart from chat calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from modelway.core.types import GeneratedImage, ImageRequest
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason
from modelway.surfaces.json_body import load_json
from modelway.surfaces.openai import OPENAI
from modelway.surfaces.openai_request import check_bounds, check_range, invalid_value, missing_parameter, typed_field

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "OPENAI_IMAGES",
    "QUALITIES",
    "SIZES",
    "images_json",
    "parse_images_body",
    "parse_images_request",
]

# What the gateway accepts (DALL-E 3's prompt limit; at most 4 images a call).
MAX_PROMPT_CHARS = 4000
MAX_IMAGES = 4
SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792")
QUALITIES = ("standard", "hd")
_FORMATS = ("url", "b64_json")
_STYLES = ("vivid", "natural")
# Parameters the gateway reads itself; every other top-level field goes upstream as it came.
_INTERPRETED = frozenset({"model", "prompt", "n", "size", "quality", "response_format", "style", "user", "stream"})
# Streamed generation (gpt-image-*'s partial images over SSE): an upstream would answer with a stream
# the gateway does not relay, so these are refused rather than passed on.
_STREAMING = ("stream", "partial_images")


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 2 else " and ".join(quoted)


def _choice(data: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    """The value the caller chose among `allowed`; "" when it set none."""
    value = typed_field(data, name, str)
    if value is None:
        return ""
    if value not in allowed:
        raise invalid_value(name, value, _listed(allowed))
    return str(value)


def parse_images_request(data: Any) -> ImageRequest:
    """Checks every parameter as OpenAI documents it; raises GatewayError naming the param.

    An absent `model` is "": the pipeline then picks the catalog's first image model.
    """
    if not isinstance(data, dict):
        raise GatewayError(
            Reason.INVALID_BODY, "We could not parse the JSON body of your request: expected a JSON object."
        )
    check_bounds(data)
    prompt = typed_field(data, "prompt", str)
    if prompt is None:
        raise missing_parameter("prompt")
    if not prompt.strip():
        raise GatewayError(Reason.INVALID_VALUE, "Invalid 'prompt': the prompt must not be empty.", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GatewayError(
            Reason.STRING_ABOVE_MAX_LENGTH,
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, but got "
            f"a string with length {len(prompt)} instead.",
            param="prompt",
        )
    n = typed_field(data, "n", int)
    check_range("n", n, 1, MAX_IMAGES)
    for name in _STREAMING:
        if data.get(name) not in (None, False, 0):
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Invalid '{name}': streamed image generation is not supported; leave '{name}' out.",
                param=name,
            )
    chosen = _choice(data, "response_format", _FORMATS)
    response_format: Literal["url", "b64_json", ""] = (
        "b64_json" if chosen == "b64_json" else "url" if chosen == "url" else ""
    )
    return ImageRequest(
        model=typed_field(data, "model", str) or "",
        prompt=prompt,
        n=1 if n is None else n,
        size=_choice(data, "size", SIZES),
        quality=_choice(data, "quality", QUALITIES),
        response_format=response_format,
        style=_choice(data, "style", _STYLES),
        user=typed_field(data, "user", str) or "",
        extra={name: value for name, value in data.items() if name not in _INTERPRETED},
    )


def parse_images_body(body: bytes) -> ImageRequest:
    """A raw HTTP body: JSON first, then every parameter."""
    data = load_json(body, "We could not parse the JSON body of your request. ({problem})")
    return parse_images_request(data)


def _image(image: GeneratedImage) -> dict[str, str]:
    item = {"url": image.url} if image.url else {"b64_json": image.b64_json}
    if image.revised_prompt:
        item["revised_prompt"] = image.revised_prompt
    return item


def images_json(created: int, images: tuple[GeneratedImage, ...]) -> bytes:
    """The images response: `{"created": ..., "data": [{"url" | "b64_json", "revised_prompt"}]}`."""
    return orjson.dumps({"created": created, "data": [_image(image) for image in images]})


# Image calls (OpenAI's images API, and images asked for through chat completions): priced per image.
IMAGES_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits, or ask for fewer images (n) or standard quality.",
    answer_smaller="Ask for fewer images (n), or response_format 'url' instead of 'b64_json'.",
)


class OpenAIImagesSurface:
    """Image calls through the OpenAI REST API: OpenAI's statuses and error bodies."""

    name = "openai-images"
    wording = IMAGES_WORDING

    def status(self, error: GatewayError) -> int:
        return OPENAI.status(error)

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        return OPENAI.error_response(error)


OPENAI_IMAGES = OpenAIImagesSurface()
