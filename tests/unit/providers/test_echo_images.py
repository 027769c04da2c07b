"""The echo provider's images: real PNGs of the requested size, the same for the same prompt, drawn off the loop."""

from __future__ import annotations

import asyncio
import base64
import io
import time

from PIL import Image

from modelway.core.types import ImageRequest
from modelway.providers.base import ImageProvider
from modelway.providers.echo import EchoProvider
from modelway.providers.echo_images import parse_size, render_png


def decoded(png: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG"
    picture.load()
    return picture


def test_every_size_is_a_real_png_of_that_size() -> None:
    for size in ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"):
        assert decoded(render_png("a red fox", size)).size == parse_size(size)


def test_deterministic_from_the_prompt_and_index_and_quality() -> None:
    first = render_png("a red fox", "256x256")
    assert render_png("a red fox", "256x256") == first
    assert render_png("a blue fox", "256x256") != first
    assert render_png("a red fox", "256x256", index=1) != first
    assert render_png("a red fox", "256x256", quality="hd") != first


async def test_provider_answers_n_base64_pngs_with_the_prompt() -> None:
    provider: ImageProvider = EchoProvider()
    request = ImageRequest(model="echo-image", prompt="two owls", n=2, size="512x512", response_format="url")
    images = await provider.generate_images(request, "echo-image", timeout=10)
    assert len(images) == 2
    pngs = [base64.b64decode(image.b64_json) for image in images]
    assert pngs[0] != pngs[1]
    assert [decoded(png).size for png in pngs] == [(512, 512)] * 2
    assert {image.revised_prompt for image in images} == {"two owls"}
    assert not any(image.url for image in images)  # the gateway stores them when URLs are asked for


async def test_drawing_runs_off_the_event_loop() -> None:
    """Four hd 1792x1024 images take a few hundred ms of CPU: the loop keeps its turns meanwhile."""
    gaps: list[float] = []
    drawing = True

    async def ticker() -> None:
        last = time.perf_counter()
        while drawing:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticks = asyncio.create_task(ticker())
    started = time.perf_counter()
    request = ImageRequest(model="echo-image", prompt="load", n=4, size="1792x1024", quality="hd")
    await EchoProvider().generate_images(request, "echo-image")
    elapsed = time.perf_counter() - started
    drawing = False
    await ticks
    assert len(gaps) > 10
    assert max(gaps) < elapsed / 2, (max(gaps), elapsed)
