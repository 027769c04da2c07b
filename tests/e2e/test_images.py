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
from tests.fakes.server import Json, Sse
from tests.openai_schema import validate
from tests.real.postgres import connect_db

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
        with connect_db(images.stack.db_path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM usage WHERE request_id = ?", [request_id]).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def balance(images: ImageStack, account: str) -> int:
    with connect_db(images.stack.db_path) as db:
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


# --- validation, in OpenAI's error shape ---------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code", "message"),
    [
        (
            {"model": "echo-image", "prompt": "p" * 4001},
            "prompt",
            "string_above_max_length",
            "Invalid 'prompt': string too long. Expected a string with maximum length 4000, but got a string with "
            "length 4001 instead.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "size": "100x100"},
            "size",
            "invalid_value",
            "Invalid value: '100x100'. Supported values are: '256x256', '512x512', '1024x1024', '1792x1024', and "
            "'1024x1792'.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "n": 5},
            "n",
            "integer_above_max_value",
            "Invalid 'n': integer above maximum value. Expected a value <= 4, but got 5 instead.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "n": 0},
            "n",
            "integer_below_min_value",
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "response_format": "png"},
            "response_format",
            "invalid_value",
            "Invalid value: 'png'. Supported values are: 'url' and 'b64_json'.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "quality": "ultra"},
            "quality",
            "invalid_value",
            "Invalid value: 'ultra'. Supported values are: 'standard' and 'hd'.",
        ),
        (
            {"model": "echo-image", "prompt": "p", "n": "2"},
            "n",
            "invalid_type",
            "Invalid type for 'n': expected an integer, but got a string instead.",
        ),
        ({"model": "echo-image"}, "prompt", "missing_required_parameter", "Missing required parameter: 'prompt'."),
        ({"model": "echo-1", "prompt": "p"}, "model", "invalid_value", "The model `echo-1` does not generate images."),
    ],
)
def test_bad_requests_are_400_in_openai_shape(
    images: ImageStack, body: dict[str, Any], param: str, code: str, message: str
) -> None:
    reply = generate(images, body)
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    validate("ErrorResponse", reply.json())
    row = usage_row(images, reply.headers["x-request-id"])
    assert (row["surface"], row["status"], row["error_code"], row["cost"]) == ("openai-images", 400, code, 0)


def test_not_json_unknown_model_and_no_key(images: ImageStack) -> None:
    reply = generate(images, b"{not json")
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    reply = generate(images, {"model": "nope", "prompt": "p"})
    assert reply.status == 404 and reply.json()["error"]["code"] == "model_not_found"
    reply = request(images.stack.http_port, "POST", GENERATIONS, {"prompt": "p"}, {})
    assert reply.status == 401 and reply.json()["error"]["type"] == "authentication_error"


def test_sdk_raises_its_own_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="echo-image", prompt="p", size="100x100")  # type: ignore[arg-type]
    assert raised.value.code == "invalid_value" and raised.value.param == "size"


def test_the_permission_is_images_generations(images: ImageStack) -> None:
    stack = images.stack
    _, key = stack.create_key("chat-only", stack.account_id, "--permissions", "chat.completions")
    reply = generate(images, {"model": "echo-image", "prompt": "p"}, key)
    assert reply.status == 403
    assert reply.json()["error"] == {
        "message": "You have insufficient permissions for this operation. Missing permission: images.generations.",
        "type": "permission_error",
        "param": None,
        "code": "insufficient_permissions",
    }


# --- files --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["A" * 32 + ".png", "..%2F..%2Fmodelway.db", "x.png", "%2e%2e"])
def test_unknown_files_are_404_in_openai_shape(images: ImageStack, name: str) -> None:
    reply = request(images.stack.http_port, "GET", f"/api/v1/images/files/{name}")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_files_need_no_key_and_are_cacheable(images: ImageStack) -> None:
    reply = generate(images, {"model": "echo-image", "prompt": "cache me", "size": "256x256"})
    url = reply.json()["data"][0]["url"]
    path = url.removeprefix(images.stack.http_base)
    got = request(images.stack.http_port, "GET", path)  # no Authorization header
    assert got.status == 200
    assert got.headers["content-type"] == "image/png"
    assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert int(got.headers["content-length"]) == len(got.body)
    assert png_size(got.body) == (256, 256)


def test_url_follows_the_host_the_caller_used(images: ImageStack) -> None:
    stack = images.stack
    body = {"model": "echo-image", "prompt": "hosts", "size": "256x256"}
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    proxied = {**auth, "X-Forwarded-Host": "ai.example.com", "X-Forwarded-Proto": "https"}
    url = request(stack.http_port, "POST", GENERATIONS, body, proxied).json()["data"][0]["url"]
    assert url.startswith("https://ai.example.com/api/v1/images/files/")
    named = {**auth, "Host": f"localhost:{stack.http_port}"}
    url = request(stack.http_port, "POST", GENERATIONS, body, named).json()["data"][0]["url"]
    assert url.startswith(f"http://localhost:{stack.http_port}/api/v1/images/files/")


# --- limits, credits, usage ----------------------------------------------------


def test_images_have_their_own_rate_limit(images: ImageStack) -> None:
    stack = images.stack
    account = stack.create_account("image-limits", plan="imagesmall")
    _, key = stack.create_key("limited", account)
    # Limits count in fixed UTC minutes: start well inside one.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    body = {"model": "echo-image", "prompt": "limit", "size": "256x256"}
    first, second, third = (generate(images, body, key) for _ in range(3))
    assert (first.status, second.status) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert third.status == 429
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert int(third.headers["retry-after"]) >= 1
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    # Chat counts apart: the same key still chats.
    chat = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    reply = request(stack.http_port, "POST", "/api/v1/chat/completions", chat, {"Authorization": f"Bearer {key}"})
    assert reply.status == 200
    assert usage_row(images, third.headers["x-request-id"])["status"] == 429


def test_each_image_is_charged_and_recorded(images: ImageStack) -> None:
    stack = images.stack
    account = stack.create_account("image-credits", credits=100)
    _, key = stack.create_key("payer", account)
    reply = generate(images, {"model": "echo-image", "prompt": "three cats", "n": 3, "size": "256x256"}, key)
    assert reply.status == 200
    assert len(reply.json()["data"]) == 3
    row = usage_row(images, reply.headers["x-request-id"])
    assert row["surface"] == "openai-images"
    assert (row["model"], row["provider"], row["status"], row["error_code"]) == ("echo-image", "echo", 200, "")
    assert row["cost"] == 3 * 2.5 * MICRO  # credits_per_image = 2.5
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] == 0
    assert balance(images, account) == 100 * MICRO - row["cost"]


def test_a_failed_call_costs_nothing_and_too_little_credit_is_429(images: ImageStack) -> None:
    stack = images.stack
    account = stack.create_account("image-poor", credits=5)
    _, key = stack.create_key("poor", account)
    # Three images at 2.5 are more than 5 credits: refused before anything is drawn.
    reply = generate(images, {"model": "echo-image", "prompt": "p", "n": 3, "size": "256x256"}, key)
    assert reply.status == 429
    assert reply.json()["error"]["code"] == "insufficient_quota"
    reply = generate(images, {"model": "echo-image", "prompt": "p", "size": "1x1"}, key)
    assert reply.status == 400
    assert balance(images, account) == 5 * MICRO
    reply = generate(images, {"model": "echo-image", "prompt": "p", "n": 2, "size": "256x256"}, key)
    assert reply.status == 200
    assert balance(images, account) == 0


# --- an OpenAI-compatible upstream ----------------------------------------------


def test_upstream_images_pass_through_in_both_formats(client: openai.OpenAI, images: ImageStack) -> None:
    upstream = images.upstream
    upstream.reset()
    answer = client.images.generate(model="dall-e-3", prompt="a castle", n=2, style="natural", extra_body={"seed": 7})
    assert [image.url for image in answer.data or []] == ["https://images.example/img-1.png"] * 2
    assert (answer.data or [])[0].revised_prompt == "A picture of a castle"
    [sent] = upstream.requests
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert sent.json == {
        "seed": 7,
        "model": "dall-e-3",
        "prompt": "a castle",
        "n": 2,
        "style": "natural",
    }
    answer = client.images.generate(model="dall-e-3", prompt="a castle", response_format="b64_json")
    assert (answer.data or [])[0].b64_json == fake_openai.PNG_B64
    assert png_size(base64.b64decode(fake_openai.PNG_B64)) == (1, 1)


def test_an_upstream_answer_past_the_offload_size_passes_through_whole(images: ImageStack) -> None:
    """An answer larger than OFFLOAD_BYTES (256 KiB; the size at which the provider parses it in a worker
    thread) arrives exactly as the upstream sent it, in either format (url mode stores the decoded PNGs).
    That the parse happens off the loop is not observable here; this checks only the pass-through."""
    big = io.BytesIO()
    Image.effect_noise((400, 400), 64).convert("RGB").save(big, format="PNG")
    encoded = base64.b64encode(big.getvalue()).decode()
    assert len(encoded) > 256 * 1024
    upstream = images.upstream
    upstream.reset()
    answer = {"created": 1, "data": [{"b64_json": encoded}, {"b64_json": encoded}]}
    upstream.script(Json(answer), Json(answer))
    reply = generate(images, {"model": "dall-e-3", "prompt": "noise", "n": 2, "response_format": "b64_json"})
    assert reply.status == 200, reply.body[:300]
    assert [image["b64_json"] for image in reply.json()["data"]] == [encoded, encoded]
    reply = generate(images, {"model": "dall-e-3", "prompt": "noise", "n": 2})
    assert reply.status == 200, reply.body[:300]
    urls = [image["url"] for image in reply.json()["data"]]
    assert all(fetch(url)[2] == big.getvalue() for url in urls)


def test_upstream_failures_are_openai_errors_and_cost_nothing(images: ImageStack) -> None:
    upstream = images.upstream
    upstream.reset()
    upstream.script(
        Json(fake_openai.error_json("Your prompt was rejected by the safety system."), status=400),
    )
    reply = generate(images, {"model": "dall-e-3", "prompt": "something"})
    assert reply.status == 400
    assert reply.json()["error"]["message"] == "Your prompt was rejected by the safety system."
    row = usage_row(images, reply.headers["x-request-id"])
    assert (row["status"], row["cost"], row["provider"]) == (400, 0, "oai-images")


def test_an_upstream_sending_more_images_than_asked_is_cut_to_n(images: ImageStack) -> None:
    """The credit hold covers `n` images: an upstream that sends more is neither passed on nor charged for them."""
    stack, upstream = images.stack, images.upstream
    account = stack.create_account("image-extra", credits=8)  # two images at 4 credits: exactly the hold
    _, key = stack.create_key("extra", account)
    upstream.reset()
    upstream.script(Json(fake_openai.images_json("a fox", n=4, response_format="b64_json")))
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox", "n": 2, "response_format": "b64_json"}, key)
    assert reply.status == 200, reply.body
    assert len(reply.json()["data"]) == 2
    row = usage_row(images, reply.headers["x-request-id"])
    assert (row["status"], row["cost"]) == (200, 2 * 4 * MICRO)
    assert balance(images, account) == 0


# --- native gRPC -------------------------------------------------------------------


def test_native_rpc_direct_and_through_envoy(images: ImageStack) -> None:
    stack = images.stack
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    for target in (stack.grpc_target, stack.envoy_target):
        with grpc.insecure_channel(target) as channel:
            stub = images_pb2_grpc.ImagesServiceStub(channel)
            reply, call = stub.GenerateImages.with_call(
                images_pb2.GenerateImagesRequest(
                    model="echo-image", prompt="native", size="256x256", response_format="b64_json", n=2
                ),
                metadata=metadata,
                timeout=30,
            )
            assert usage_row(images, dict(call.initial_metadata())["x-request-id"])["surface"] == "grpc-images"
            assert len(reply.data) == 2 and reply.created > 0
            assert png_size(base64.b64decode(reply.data[1].b64_json)) == (256, 256)
            # URLs point at the REST file route; a direct caller gets the listener's address.
            reply = stub.GenerateImages(
                images_pb2.GenerateImagesRequest(model="echo-image", prompt="native", size="256x256"),
                metadata=metadata,
                timeout=30,
            )
            assert png_size(fetch(reply.data[0].url)[2]) == (256, 256)
            with pytest.raises(grpc.RpcError) as raised:
                stub.GenerateImages(
                    images_pb2.GenerateImagesRequest(model="echo-image", prompt="p", n=9), metadata=metadata
                )
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Expected a value <= 4" in (raised.value.details() or "")


# --- image models are not chat models --------------------------------------------


def test_chat_calls_to_an_image_model_are_refused_in_each_surface(images: ImageStack) -> None:
    stack = images.stack
    bearer = {"Authorization": f"Bearer {stack.api_key}"}
    hint = "is an image model, not a chat model: send it to POST /api/v1/images/generations"
    for model in ("dall-e-3", "echo-image"):
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        reply = request(stack.http_port, "POST", "/api/v1/chat/completions", chat, bearer)
        assert reply.status == 400, reply.body
        error = reply.json()["error"]
        assert (error["param"], error["code"]) == ("model", "invalid_value") and hint in error["message"]
        row = usage_row(images, reply.headers["x-request-id"])
        assert (row["status"], row["cost"]) == (400, 0)
        gemini = {"contents": [{"parts": [{"text": "hi"}]}]}
        for path in (
            f"/api/v1beta/models/{model}:generateContent",
            f"/api/v1/models/{model}:streamGenerateContent?alt=sse",
        ):
            reply = request(stack.http_port, "POST", path, gemini, {"x-goog-api-key": stack.api_key})
            assert reply.status == 400, reply.body
            assert reply.json()["error"]["status"] == "INVALID_ARGUMENT" and hint in reply.json()["error"]["message"]
        reply = request(
            stack.http_port, "POST", "/api/v1/ai/chat", {"model": model, "messages": chat["messages"]}, bearer
        )
        assert reply.status == 400 and hint in reply.json()["error"]["message"], reply.body
    assert not images.upstream.requests or all("chat" not in sent.path for sent in images.upstream.requests)


def test_gemini_lists_only_chat_models_and_openai_lists_all(images: ImageStack) -> None:
    stack = images.stack
    reply = request(stack.http_port, "GET", "/api/v1beta/models?pageSize=1000", None, {"x-goog-api-key": stack.api_key})
    names = [model["name"] for model in reply.json()["models"]]
    assert "models/echo-1" in names and "models/echo-image" not in names and "models/dall-e-3" not in names
    reply = request(stack.http_port, "GET", "/api/v1beta/models/dall-e-3", None, {"x-goog-api-key": stack.api_key})
    assert reply.status == 404 and reply.json()["error"]["status"] == "NOT_FOUND"
    reply = request(stack.http_port, "GET", "/api/v1/models", None, {"Authorization": f"Bearer {stack.api_key}"})
    assert {"dall-e-3", "echo-image"} <= {model["id"] for model in reply.json()["data"]}


# --- what goes upstream, and what an upstream's answer may cost ----------------


def test_only_the_options_the_caller_set_go_upstream(images: ImageStack) -> None:
    upstream = images.upstream
    upstream.reset()
    # As gpt-image-1 answers: base64 always, and no response_format or quality "standard" accepted.
    upstream.script(Json(fake_openai.images_json("a fox", response_format="b64_json")))
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox"})
    assert reply.status == 200, reply.body
    [sent] = upstream.requests
    assert sent.json == {"model": "dall-e-3", "prompt": "a fox", "n": 1}
    # The caller asked for nothing, so it gets OpenAI's default: a URL, to the PNG the upstream sent.
    [image] = reply.json()["data"]
    assert fetch(image["url"])[2] == base64.b64decode(fake_openai.PNG_B64)
    upstream.reset()
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox", "size": "1792x1024", "quality": "hd"})
    assert reply.status == 200, reply.body
    assert upstream.requests[0].json == {
        "model": "dall-e-3",
        "prompt": "a fox",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
    }


@pytest.mark.parametrize("field", [{"stream": True}, {"partial_images": 2}])
def test_streamed_generation_is_refused(images: ImageStack, field: dict[str, Any]) -> None:
    images.upstream.reset()
    [(name, _)] = field.items()
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox", **field})
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (name, "invalid_value")
    assert error["message"] == f"Invalid '{name}': streamed image generation is not supported; leave '{name}' out."
    assert images.upstream.requests == []
    # stream: false asks for what every call gets; it is not passed on.
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox", "stream": False})
    assert reply.status == 200 and "stream" not in images.upstream.requests[0].json


def test_a_malformed_answer_is_not_retried_and_does_not_trip_the_breaker(images: ImageStack) -> None:
    upstream = images.upstream
    upstream.reset()
    # More malformed answers in a row than the breaker's threshold (5): an SSE stream where JSON belongs.
    upstream.script(*[Sse(['{"type": "image_generation.completed"}']) for _ in range(6)])
    for _ in range(6):
        reply = generate(images, {"model": "dall-e-3", "prompt": "a fox"})
        assert reply.status == 502, reply.body
        assert reply.json()["error"]["message"] == "The upstream provider sent a malformed answer (not JSON)."
        assert usage_row(images, reply.headers["x-request-id"])["cost"] == 0
    # One upstream request per call (no retry, no new images paid for), and the provider is still up.
    assert len(upstream.requests) == 6
    reply = generate(images, {"model": "dall-e-3", "prompt": "a fox"})
    assert reply.status == 200, reply.body


def test_native_images_past_their_deadline_are_never_charged(images: ImageStack) -> None:
    """Native calls whose deadlines race the drawing, the row's commit and the send: a call the client
    saw fail is never charged, one it received always is."""
    stack = images.stack
    tag = f"img-deadline-{time.monotonic_ns()}"
    outcomes: dict[str, grpc.StatusCode] = {}
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = images_pb2_grpc.ImagesServiceStub(channel)
        futures = []
        for index in range(120):
            client_id = f"{tag}-{index}"
            metadata = (("authorization", f"Bearer {stack.api_key}"), ("x-client-request-id", client_id))
            generate_request = images_pb2.GenerateImagesRequest(
                model="echo-image", prompt=f"race {index}", size="256x256", response_format="b64_json"
            )
            timeout = (0.005, 0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.12, 0.3, 2.0)[index % 10]
            futures.append(
                (client_id, stub.GenerateImages.future(generate_request, metadata=metadata, timeout=timeout))
            )
        for client_id, future in futures:
            try:
                future.result()
                outcomes[client_id] = grpc.StatusCode.OK
            except grpc.RpcError as error:
                outcomes[client_id] = error.code()
    time.sleep(1)
    with connect_db(stack.db_path) as db:
        query = "SELECT client_request_id, status, cost FROM usage WHERE client_request_id LIKE ?"
        rows = {client_id: (status, cost) for client_id, status, cost in db.execute(query, [f"{tag}-%"])}
    failed = [client_id for client_id, code in outcomes.items() if code != grpc.StatusCode.OK]
    assert failed and len(failed) < len(outcomes), outcomes
    for client_id in failed:
        if client_id in rows:
            assert rows[client_id][0] != 200 and rows[client_id][1] == 0, (
                client_id,
                outcomes[client_id],
                rows[client_id],
            )
    for client_id, code in outcomes.items():
        if code == grpc.StatusCode.OK:
            assert rows[client_id][0] == 200


# --- last in this module: it stops the server ------------------------------------------


def test_server_down_is_503_with_retry_after_on_every_surface(images: ImageStack) -> None:
    stack = images.stack
    bearer = {"Authorization": f"Bearer {stack.api_key}"}
    stack.stop_server()
    try:
        chat = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
        for path, body in (("/api/v1/chat/completions", chat), (GENERATIONS, {"prompt": "p"})):
            reply = request(stack.http_port, "POST", path, body, bearer)
            assert reply.status == 503, reply.body
            assert reply.headers["Retry-After"] == "5" and reply.headers["X-Request-Id"], (
                path,
                reply.headers.items(),
                reply.body,
            )
            assert reply.json()["error"]["type"] == "api_error"
            validate("ErrorResponse", reply.json())
        gemini = {"contents": [{"parts": [{"text": "hi"}]}]}
        reply = request(
            stack.http_port,
            "POST",
            "/api/v1beta/models/echo-1:generateContent",
            gemini,
            {"x-goog-api-key": stack.api_key},
        )
        assert reply.status == 503 and reply.headers["Retry-After"] == "5", reply.body
        error = reply.json()["error"]
        assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
        assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"}]
        reply = request(stack.http_port, "POST", "/api/v1/ai/chat", {"prompt": "hi"}, bearer)
        assert reply.status == 503 and reply.headers["Retry-After"] == "60"
    finally:
        stack.start_server()
    assert generate(images, {"prompt": "back", "size": "256x256"}).status == 200
