"""OpenAI Images API (https://platform.openai.com/docs/api-reference/images/create) as an upstream wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelway.core.types import GeneratedImage, ImageRequest
from modelway.errors import GatewayError
from modelway.providers.base import HttpRequest, Upstream, malformed
from modelway.providers.openai import openai_http_error

__all__ = ["OpenAIImageTranslator", "image_request_to_openai", "openai_images_to_results"]


def image_request_to_openai(request: ImageRequest, model: str) -> dict[str, Any]:
    """The POST /images/generations body: what the gateway does not model first, then what it does, and
    of the options only those the caller set (models differ in what they take: gpt-image-* refuses
    response_format, dall-e-* the qualities of gpt-image-*)."""
    body: dict[str, Any] = {**request.extra, "model": model, "prompt": request.prompt, "n": request.n}
    options = {
        "size": request.size,
        "quality": request.quality,
        "response_format": request.response_format,
        "style": request.style,
        "user": request.user,
    }
    body.update({name: value for name, value in options.items() if value})
    return body


def openai_images_to_results(answer: Any) -> tuple[GeneratedImage, ...]:
    """The `data` of an images answer; an answer without any image is malformed."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not data:
        raise malformed("not an OpenAI images answer")
    images = []
    for item in data:
        url = item.get("url") if isinstance(item, dict) else None
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(url, str | None) or not isinstance(b64, str | None) or not (url or b64):
            raise malformed("an image with neither url nor b64_json")
        revised = item.get("revised_prompt")
        images.append(GeneratedImage(url=url or "", b64_json=b64 or "", revised_prompt=revised or ""))
    return tuple(images)


class OpenAIImageTranslator:
    """One image generation request to one OpenAI-compatible upstream."""

    def __init__(self, request: ImageRequest, upstream: Upstream) -> None:
        self._request = request
        self._upstream = upstream

    def request(self) -> HttpRequest:
        headers = {"Content-Type": "application/json"}
        if self._upstream.api_key:
            headers["Authorization"] = f"Bearer {self._upstream.api_key}"
        headers.update(self._upstream.headers)
        return HttpRequest(
            url=f"{self._upstream.base_url.rstrip('/')}/images/generations",
            headers=headers,
            body=orjson.dumps(image_request_to_openai(self._request, self._upstream.model)),
            streaming=False,
        )

    def json_body(self, body: bytes) -> tuple[GeneratedImage, ...]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise malformed("not JSON") from None
        return openai_images_to_results(answer)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return openai_http_error(status, headers, body)
