"""A stack with image models (echo, and an OpenAI-compatible fake), a plan with a small image limit,
and model ids that need percent-encoding in a path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.fakes import openai as fake_openai
from tests.fakes.server import FakeUpstream

UPSTREAM_SECRET = "sk-upstream-images"

IMAGES_CONFIG = """
[plans.imagesmall]
chat_requests_per_minute = 1000
image_requests_per_minute = 2
max_keys = 5
daily_token_budget = 1000000
max_input_tokens = 100000

[[providers]]
name = "oai-images"
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "FAKE_IMAGES_KEY"

[[models]]
id = "echo-image"
provider = "echo"
type = "image"
credits_per_image = 2.5

[[models]]
id = "dall-e-3"
provider = "oai-images"
type = "image"
credits_per_image = 4

[[models]]
id = "ft:gpt-4o-mini:org:custom:id"
provider = "echo"

[[models]]
id = "meta-llama/Llama-3.1-8B"
provider = "echo"
"""


@dataclass
class ImageStack:
    stack: Stack
    upstream: FakeUpstream


@contextlib.contextmanager
def image_stack(workdir: Path) -> Iterator[ImageStack]:
    upstream = fake_openai.start()
    previous = os.environ.get("FAKE_IMAGES_KEY")
    os.environ["FAKE_IMAGES_KEY"] = UPSTREAM_SECRET  # read by the server process at start
    try:
        with running_stack(workdir, TEST_CONFIG + IMAGES_CONFIG.format(openai=upstream.base_url)) as stack:
            yield ImageStack(stack, upstream)
    finally:
        if previous is None:
            os.environ.pop("FAKE_IMAGES_KEY", None)
        else:
            os.environ["FAKE_IMAGES_KEY"] = previous
        upstream.stop()
