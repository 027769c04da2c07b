"""Image output through OpenAI chat completions, the way OpenRouter documents it.

A chat body with `modalities` naming "image", or with an `image_config` and no
`modalities`, is an image call: the `model` must be an image model (else 400), the last user
message's text is the prompt, `image_config.aspect_ratio` picks the size, and
the answer is a `chat.completion` whose assistant message carries
`images: [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]`
(https://openrouter.ai/docs/features/multimodal/image-generation). With
`stream: true` the answer is one chunk carrying the images delta, then
`[DONE]`. It goes through Pipeline.images: the image permission, rate limit,
per-image price and a usage row saying "openai-chat-images".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from modelway.core.types import GeneratedImage, ImageRequest
from modelway.errors import GatewayError, Reason
from modelway.surfaces.openai import OPENAI, sse_done, sse_event
from modelway.surfaces.openai_images import IMAGES_WORDING, MAX_PROMPT_CHARS
from modelway.surfaces.openai_request import invalid_value, parse_chat_request, typed_field

__all__ = ["ASPECT_RATIOS", "OPENAI_CHAT_IMAGES", "ChatImageAnswer", "image_output_body", "parse_chat_image"]

# OpenRouter's aspect ratios that the gateway's sizes can honour (the Images API's three large sizes).
ASPECT_RATIOS: Mapping[str, str] = MappingProxyType({"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792"})
_MODALITIES = ("text", "image")
_MARKERS = (b'"modalities"', b'"image_config"')


def _asks_for_image(data: Mapping[str, Any]) -> bool:
    """`modalities`, when given as a list, decides (["text"] with an image_config is a chat call, as it
    was before image output existed); without it, an `image_config` asks for an image."""
    modalities = data.get("modalities")
    if isinstance(modalities, list):
        return "image" in modalities
    return data.get("image_config") is not None


def mentions_image_output(body: bytes) -> bool:
    """Whether the body names `modalities` or `image_config` at all: the cheap test before any parsing."""
    return any(marker in body for marker in _MARKERS)


def image_output_body(body: bytes) -> dict[str, Any] | None:
    """The parsed body when it asks for image output; None for every other chat call.

    Runs outside the pipeline, so it must cost an ordinary chat call nothing
    (a body naming neither field is not parsed here), and only after the key
    is checked: a caller without a key never makes the server parse its body.
    One that is not a JSON object goes the chat way, which answers its error."""
    if not mentions_image_output(body):
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and _asks_for_image(data) else None


def _size(data: Mapping[str, Any]) -> str:
    config = typed_field(data, "image_config", dict)
    if config is None:
        return ""
    for name in config:
        if name != "aspect_ratio":
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"Invalid 'image_config.{name}': not supported; the only image option is 'aspect_ratio'.",
                param=f"image_config.{name}",
            )
    ratio = typed_field(config, "aspect_ratio", str, "image_config")
    if ratio is None:
        return ""
    if ratio not in ASPECT_RATIOS:
        raise invalid_value("image_config.aspect_ratio", ratio, ", ".join(f"'{r}'" for r in ASPECT_RATIOS))
    return ASPECT_RATIOS[ratio]


def parse_chat_image(data: Mapping[str, Any]) -> ImageRequest:
    """Checks the chat body as any chat call's, then what image output needs; raises GatewayError naming the param."""
    chat = parse_chat_request(data)
    modalities = typed_field(data, "modalities", list)
    for index, modality in enumerate(modalities or ()):
        if modality not in _MODALITIES:
            raise invalid_value(f"modalities[{index}]", modality, "'text' and 'image'")
    if chat.n != 1:
        raise GatewayError(
            Reason.INVALID_VALUE, "Invalid 'n': image output makes one answer; leave 'n' out.", param="n"
        )
    size = _size(data)
    prompt = chat.last_user_text
    if not prompt.strip():
        raise GatewayError(
            Reason.INVALID_VALUE,
            "Invalid 'messages': image output needs a user message with text to draw.",
            param="messages",
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GatewayError(
            Reason.STRING_ABOVE_MAX_LENGTH,
            f"Invalid 'messages': the last user message is the image prompt and may have at most "
            f"{MAX_PROMPT_CHARS} characters, but it has {len(prompt)}.",
            param="messages",
        )
    # Base64 always: the image travels inside the message as a data URL. Chat-only fields stay here.
    return ImageRequest(model=chat.model, prompt=prompt, size=size, response_format="b64_json", user=chat.user)


class ChatImageAnswer:
    """One image call's answer in chat completion words: a whole `chat.completion`, or its stream."""

    def __init__(self, run_id: str, created: int, model: str, prompt_tokens: int) -> None:
        self._id = "chatcmpl-" + run_id
        self._created = created
        self._model = model
        self._prompt_tokens = prompt_tokens

    def _usage(self) -> dict[str, Any]:
        return {"prompt_tokens": self._prompt_tokens, "completion_tokens": 0, "total_tokens": self._prompt_tokens}

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self._id, "object": kind, "created": self._created, "model": self._model}

    @staticmethod
    def _images(images: tuple[GeneratedImage, ...]) -> list[dict[str, Any]]:
        # An upstream that sent a URL despite b64_json being asked for: its URL is passed on.
        return [
            {"type": "image_url", "image_url": {"url": image.url or "data:image/png;base64," + image.b64_json}}
            for image in images
        ]

    @staticmethod
    def _content(images: tuple[GeneratedImage, ...]) -> str:
        return next((image.revised_prompt for image in images if image.revised_prompt), "")

    def completion(self, images: tuple[GeneratedImage, ...]) -> bytes:
        message = {
            "role": "assistant",
            "content": self._content(images),
            "refusal": None,
            "annotations": [],
            "images": self._images(images),
        }
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return orjson.dumps(
            {
                **self._head("chat.completion"),
                "choices": [choice],
                "usage": self._usage(),
                "service_tier": "default",
            }
        )

    def stream(self, images: tuple[GeneratedImage, ...], *, include_usage: bool) -> bytes:
        """Every frame at once: the images delta (with the stop), the usage when asked for, then [DONE]."""
        delta = {"role": "assistant", "content": self._content(images), "images": self._images(images)}
        chunk: dict[str, Any] = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop"}],
        }
        frames = [chunk]
        if include_usage:
            # As OpenAI's chat streams: every chunk says "usage": null, a last one with no choices has it.
            chunk["usage"] = None
            frames.append({**self._head("chat.completion.chunk"), "choices": [], "usage": self._usage()})
        return b"".join(sse_event(orjson.dumps(frame)) for frame in frames) + sse_done()


class OpenAIChatImagesSurface:
    """Image calls through chat completions: OpenAI's statuses and error bodies, their own usage-row name."""

    name = "openai-chat-images"
    wording = IMAGES_WORDING

    def status(self, error: GatewayError) -> int:
        return OPENAI.status(error)

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        return OPENAI.error_response(error)


OPENAI_CHAT_IMAGES = OpenAIChatImagesSurface()
