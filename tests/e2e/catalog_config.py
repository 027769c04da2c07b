"""What the catalog and chat/send suites share: their configuration (the test models plus catalog
entries) and the envelope checks."""

from __future__ import annotations

from typing import Any

from tests.conftest import TEST_CONFIG
from tests.e2e.http import Reply

# 22 more models in the "bulk" category, so the catalog has two pages (20 + the rest).
BULK = 22

_CATALOG = """
[routing]
retries = 0
backoff_seconds = 0.01

[plans.nopoints]
chat_requests_per_minute = 1000
image_requests_per_minute = 10
max_keys = 10
daily_token_budget = 1000000
max_input_tokens = 10000

[[providers]]
name = "oai"
kind = "openai"
base_url = "{openai}/v1"

[[models]]
id = "gpt"
provider = "oai"
upstream_model = "gpt-4o-mini"
number = 100
slug = "gpt-fake"
name = "GPT Fake"
description = "A scripted OpenAI upstream, for tests."
category = "general"
capabilities = ["vision", "tools"]
context_length = 8000
max_output_tokens = 64
input_credits_per_1k = 1
output_credits_per_1k = 2
private_prices = true

[[models]]
id = "echo-image"
provider = "echo"
type = "image"
name = "Echo Image"
description = "Draws a PNG from the prompt."
category = "images"
credits_per_image = 1

[[models]]
id = "embed-1"
provider = "echo"
type = "embedding"
name = "Embed One"
description = "Vectors for search."
category = "embeddings"
"""

_BULK = """
[[models]]
id = "bulk-{index:02d}"
provider = "echo"
name = "Bulk {index:02d}"
description = "Filler model number {index}."
category = "bulk"
"""


def catalog_config(openai_url: str = "http://127.0.0.1:9") -> str:
    return (
        TEST_CONFIG
        + _CATALOG.format(openai=openai_url)
        + "".join(_BULK.format(index=index) for index in range(1, BULK + 1))
    )


def data_of(reply: Reply) -> Any:
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["success", "message", "data"], body
    assert body["success"] is True and body["message"] == "Success"
    return body["data"]


def error_of(reply: Reply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["success", "message"] and body["success"] is False, body
    message: str = body["message"]
    assert message
    return message
