"""The OpenAI Images API through Envoy: the openai SDK, raw HTTP, the image files, limits, credits, the native RPC."""

from __future__ import annotations

import base64
import io
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from PIL import Image

from modelway.v1 import images_pb2, images_pb2_grpc
from tests.e2e.http import Reply, request
from tests.e2e.image_stack import UPSTREAM_SECRET, ImageStack, image_stack
from tests.fakes import openai as fake_openai
from tests.fakes.server import Json
from tests.openai_schema import validate

MICRO = 1_000_000
GENERATIONS = "/api/v1/images/generations"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStack]:
    with image_stack(tmp_path_factory.mktemp("images")) as started:
        yield started


@pytest.fixture
def client(images: ImageStack) -> Iterator[openai.OpenAI]:
    stack = images.stack
    with openai.OpenAI(
        base_url=f"{stack.http_base}/api/v1", api_key=stack.api_key, max_retries=0, _strict_response_validation=True
    ) as client:
        yield client


def generate(images: ImageStack, body: dict[str, Any] | bytes, key: str = "") -> Reply:
    return request(
        images.stack.http_port, "POST", GENERATIONS, body, {"Authorization": f"Bearer {key or images.stack.api_key}"}
    )


def usage_row(images: ImageStack, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(images.stack.db_path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def balance(images: ImageStack, account: str) -> int:
    with sqlite3.connect(images.stack.db_path) as db:
        return int(db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0])


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG"
        picture.load()  # decodes every pixel: a truncated or corrupt file fails here
        return picture.size


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


# --- the openai SDK ----------------------------------------------------------


def test_sdk_b64_json_is_a_png_of_the_size_asked(client: openai.OpenAI) -> None:
    answer = client.images.generate(
        model="echo-image", prompt="a red fox in the snow", size="1792x1024", quality="hd", response_format="b64_json"
    )
    assert isinstance(answer.created, int)
    [image] = answer.data or []
    assert image.url is None
    assert image.revised_prompt == "a red fox in the snow"
    assert png_size(base64.b64decode(image.b64_json or "")) == (1792, 1024)


def test_sdk_url_serves_the_same_png_through_envoy(client: openai.OpenAI, images: ImageStack) -> None:
    answer = client.images.generate(model="echo-image", prompt="a lighthouse", size="512x512", n=2)
    urls = [image.url or "" for image in answer.data or []]
    assert len(urls) == 2 and len(set(urls)) == 2
    for url in urls:
        # Absolute, on the host the caller used, under an unguessable name.
        assert url.startswith(f"{images.stack.http_base}/api/v1/images/files/") and url.endswith(".png")
        assert len(url.rsplit("/", 1)[1]) == len("x" * 32 + ".png")
        status, content_type, data = fetch(url)
        assert (status, content_type) == (200, "image/png")
        assert png_size(data) == (512, 512)
    b64 = client.images.generate(model="echo-image", prompt="a lighthouse", size="512x512", response_format="b64_json")
    # Deterministic: the first stored image is the b64 answer's image, byte for byte.
    assert fetch(urls[0])[2] == base64.b64decode((b64.data or [])[0].b64_json or "")


def test_every_size_renders_at_its_size(client: openai.OpenAI) -> None:
    for size in ("256x256", "1024x1024", "1024x1792"):
        answer = client.images.generate(model="echo-image", prompt="sizes", size=size, response_format="b64_json")  # type: ignore[arg-type]
        width, _, height = size.partition("x")
        assert png_size(base64.b64decode((answer.data or [])[0].b64_json or "")) == (int(width), int(height))


def test_model_may_be_left_out(images: ImageStack) -> None:
    reply = generate(images, {"prompt": "no model named", "size": "256x256"})
    assert reply.status == 200, reply.body
    assert usage_row(images, reply.headers["x-request-id"])["model"] == "echo-image"
