"""Image output through chat completions (`modalities: ["image"]`, `image_config`), through Envoy."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.e2e.http import Reply, request
from tests.e2e.image_stack import ImageStack, image_stack
from tests.openai_schema import validate
from tests.real.postgres import connect_db

MICRO = 1_000_000
CHAT = "/api/v1/chat/completions"
DATA_URL = "data:image/png;base64,"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStack]:
    with image_stack(tmp_path_factory.mktemp("chat-images")) as started:
        yield started


def chat(images: ImageStack, body: dict[str, Any], key: str = "") -> Reply:
    return request(
        images.stack.http_port, "POST", CHAT, body, {"Authorization": f"Bearer {key or images.stack.api_key}"}
    )


def ask(prompt: str = "a red fox", **fields: Any) -> dict[str, Any]:
    return {
        "model": "echo-image",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
        "modalities": ["image", "text"],
        **fields,
    }


def usage_row(images: ImageStack, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect_db(images.stack.db_path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def png_size(url: str) -> tuple[int, int]:
    assert url.startswith(DATA_URL)
    with Image.open(io.BytesIO(base64.b64decode(url.removeprefix(DATA_URL), validate=True))) as picture:
        assert picture.format == "PNG"
        picture.load()
        return picture.size


def test_raw_http_answers_a_chat_completion_carrying_the_png(images: ImageStack) -> None:
    stack = images.stack
    account = stack.create_account("chat-image-payer", credits=100)
    _, key = stack.create_key("payer", account)
    reply = chat(images, ask(image_config={"aspect_ratio": "16:9"}), key)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    validate("CreateChatCompletionResponse", body)
    assert (body["object"], body["model"]) == ("chat.completion", "echo-image")
    (choice,) = body["choices"]
    assert (choice["finish_reason"], choice["message"]["role"]) == ("stop", "assistant")
    assert isinstance(choice["message"]["content"], str)
    (image,) = choice["message"]["images"]
    assert image["type"] == "image_url"
    assert png_size(image["image_url"]["url"]) == (1792, 1024)
    row = usage_row(images, reply.headers["x-request-id"])
    assert (row["surface"], row["model"], row["status"], row["error_code"]) == (
        "openai-chat-images",
        "echo-image",
        200,
        "",
    )
    assert row["cost"] == 2.5 * MICRO  # credits_per_image = 2.5
    assert body["usage"]["prompt_tokens"] == row["prompt_tokens"] > 0
    with connect_db(stack.db_path) as db:
        credits = db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0]
    assert credits == 100 * MICRO - row["cost"]


def test_image_config_alone_asks_for_an_image_and_each_ratio_has_its_size(images: ImageStack) -> None:
    for ratio, size in (("1:1", (1024, 1024)), ("9:16", (1024, 1792))):
        body = ask(image_config={"aspect_ratio": ratio})
        del body["modalities"]
        reply = chat(images, body)
        assert reply.status == 200, reply.body
        (image,) = reply.json()["choices"][0]["message"]["images"]
        assert png_size(image["image_url"]["url"]) == size


def test_openai_sdk_reads_the_images(images: ImageStack) -> None:
    stack = images.stack
    with openai.OpenAI(base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0) as client:
        completion = client.chat.completions.create(
            model="echo-image",
            messages=[{"role": "user", "content": "a lighthouse at dusk"}],
            extra_body={"modalities": ["image", "text"]},
        )
    message = completion.choices[0].message
    assert completion.object == "chat.completion" and message.role == "assistant"
    extra = message.model_extra or {}
    (image,) = extra["images"]
    assert png_size(image["image_url"]["url"]) == (1024, 1024)  # the default size


def test_streaming_is_one_images_chunk_then_done(images: ImageStack) -> None:
    stack = images.stack
    reply = chat(images, ask(stream=True, stream_options={"include_usage": True}))
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in reply.body.decode().split("\n\n") if frame]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]
    assert len(chunks) == 2
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    (choice,) = chunks[0]["choices"]
    assert choice["finish_reason"] == "stop"
    (image,) = choice["delta"]["images"]
    assert png_size(image["image_url"]["url"]) == (1024, 1024)
    assert chunks[1]["choices"] == [] and chunks[1]["usage"]["prompt_tokens"] > 0
    assert usage_row(images, reply.headers["x-request-id"])["surface"] == "openai-chat-images"
    with openai.OpenAI(base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0) as client:
        streamed = list(
            client.chat.completions.create(
                model="echo-image", messages=[{"role": "user", "content": "a kite"}], stream=True,
                extra_body={"modalities": ["image"]},
            )
        )  # fmt: skip
    assert len(streamed) == 1 and (streamed[0].choices[0].delta.model_extra or {})["images"]


@pytest.mark.parametrize(
    ("fields", "param", "code", "words"),
    [
        ({"model": "echo-1"}, "model", "invalid_value", "does not generate images"),
        ({"image_config": {"aspect_ratio": "4:3"}}, "image_config.aspect_ratio", "invalid_value", "'1:1', '16:9'"),
        ({"image_config": {"image_size": "4K"}}, "image_config.image_size", "invalid_value", "aspect_ratio"),
        ({"image_config": "wide"}, "image_config", "invalid_type", "expected an object"),
        ({"modalities": ["image", "audio"]}, "modalities[1]", "invalid_value", "'text' and 'image'"),
        ({"n": 2}, "n", "invalid_value", "one answer"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages", "invalid_value", "user message"),
        ({"messages": [{"role": "user", "content": "x" * 4001}]}, "messages", "string_above_max_length", "4000"),
        ({"model": "no-such-model"}, "model", "model_not_found", "no-such-model"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(
    images: ImageStack, fields: dict[str, Any], param: str, code: str, words: str
) -> None:
    reply = chat(images, ask(**fields))
    assert reply.status in (400, 404), reply.body
    body = reply.json()
    validate("ErrorResponse", body)
    error = body["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert words in error["message"]
    row = usage_row(images, reply.headers["x-request-id"])
    assert (row["surface"], row["status"], row["cost"]) == ("openai-chat-images", reply.status, 0)


def test_no_key_is_401_and_text_modality_stays_a_chat(images: ImageStack) -> None:
    reply = request(images.stack.http_port, "POST", CHAT, ask())
    assert reply.status == 401 and reply.json()["error"]["type"] == "authentication_error"
    # An explicit text-only `modalities` decides, even beside an image_config.
    text = {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "say modalities"}],
        "modalities": ["text"],
        "image_config": {"aspect_ratio": "1:1"},
    }
    reply = chat(images, text)
    assert reply.status == 200, reply.body
    assert "images" not in reply.json()["choices"][0]["message"]
    assert usage_row(images, reply.headers["x-request-id"])["surface"] == "openai"


def test_the_image_rate_limit_applies(images: ImageStack) -> None:
    stack = images.stack
    account = stack.create_account("chat-image-limits", plan="imagesmall")
    _, key = stack.create_key("limited", account)
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    first, second, third = (chat(images, ask(), key) for _ in range(3))
    assert (first.status, second.status) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert third.status == 429
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    # Chat counts apart: the same key still chats.
    assert chat(images, {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}, key).status == 200


def test_a_bad_key_with_a_huge_image_body_is_refused_unparsed(images: ImageStack) -> None:
    """The image check reads the body only for a key that authenticates: a bad key with ~15 MiB naming
    `modalities` is a 401 from the chat way (its row says "openai", not "openai-chat-images": the
    image path, which parses the body, was never taken)."""
    filler = "x" * (15 * 1024 * 1024)
    body = json.dumps({**ask(filler), "messages": [{"role": "user", "content": filler}]})
    for key in ("mwt-not-a-key", ""):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        reply = request(images.stack.http_port, "POST", CHAT, body, headers)
        assert reply.status == 401, reply.body[:300]
        assert reply.json()["error"]["type"] == "authentication_error"
        row = usage_row(images, reply.headers["x-request-id"])
        assert (row["surface"], row["status"], row["account_id"]) == ("openai", 401, "")
