"""Gemini's streamGenerateContent without `alt=sse` through Envoy: Google's streamed JSON array.

Google answers `POST .../models/{m}:streamGenerateContent` (no `alt`, or
`alt=json`) with Content-Type application/json and one JSON array written as
it grows: `[{...}\\r\\n,\\r\\n{...}\\r\\n]`. The google-genai SDK never asks for
this form (it always sends `?alt=sse`, tests/e2e/test_gemini.py covers it), so
these tests speak raw HTTP.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import Reply, request
from tests.e2e.test_gemini import UPSTREAM, assert_gemini_error, events, usage_row
from tests.fakes import openai as fake_openai
from tests.fakes.server import FakeUpstream, Sse

ARRAY = "/api/v1beta/models/echo-1:streamGenerateContent"
BODY = {"contents": [{"parts": [{"text": "a b"}]}]}


def post(stack: Stack, path: str, body: Any = BODY) -> Reply:
    return request(stack.http_port, "POST", path, body, {"x-goog-api-key": stack.api_key})


def elements(body: bytes) -> list[Any]:
    """The array's elements; fails unless the body is Google's framing exactly."""
    assert body.startswith(b"[{") and body.endswith(b"}\r\n]"), body
    inner = body[1 : -len(b"\r\n]")]
    parts = inner.split(b"\r\n,\r\n")
    assert all(part.startswith(b"{") and part.endswith(b"}") and b"\n" not in part for part in parts), body
    parsed = [json.loads(part) for part in parts]
    assert json.loads(body) == parsed  # and the whole body is one JSON document
    return parsed


@pytest.mark.parametrize("path", [ARRAY, ARRAY + "?alt=json", "/api/v1/models/echo-1:streamGenerateContent"])
def test_without_alt_sse_the_stream_is_one_json_array(stack: Stack, path: str) -> None:
    reply = post(stack, path)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    pieces = elements(reply.body)
    # The same GenerateContentResponse objects the SSE form sends, one per element.
    sse = events(post(stack, ARRAY + "?alt=sse").body)
    assert len(pieces) == len(sse) == 5

    def without_id(piece: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in piece.items() if name != "responseId"}

    assert [without_id(piece) for piece in pieces] == [without_id(piece) for piece in sse]
    assert len({piece["responseId"] for piece in pieces}) == 1
    text = "".join(part["text"] for piece in pieces for part in piece["candidates"][0]["content"]["parts"])
    assert text == "Echo: a b"
    assert pieces[-1]["candidates"][0]["finishReason"] == "STOP"
    assert pieces[-1]["usageMetadata"]["candidatesTokenCount"] == 4
    row = usage_row(stack.db_path, reply.headers["x-request-id"])
    assert (row["surface"], row["status"], row["completion_tokens"]) == ("gemini", 200, 4)


def test_the_array_is_written_as_it_grows(stack: Stack) -> None:
    """The first elements reach the client while the model still writes (echo-slow: 20 ms a word)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    try:
        body = json.dumps({"contents": [{"parts": [{"text": "w " * 60}]}]})
        headers = {"Content-Type": "application/json", "x-goog-api-key": stack.api_key}
        connection.request("POST", "/api/v1beta/models/echo-slow:streamGenerateContent", body, headers)
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        first = response.read1(65536)
        assert first.startswith(b"[{") and not first.endswith(b"]")
        rest = response.read()
    finally:
        connection.close()
    assert len(elements(first + rest)) > 2


def test_errors_before_the_first_element_keep_gemini_s_shape_and_status(stack: Stack) -> None:
    assert_gemini_error(post(stack, "/api/v1beta/models/nope:streamGenerateContent"), 404, "NOT_FOUND")
    assert_gemini_error(post(stack, ARRAY, "{not json"), 400, "INVALID_ARGUMENT", "INVALID_BODY")
    reply = request(stack.http_port, "POST", ARRAY, BODY, {})
    error = assert_gemini_error(reply, 401, "UNAUTHENTICATED", "MISSING_API_KEY")
    assert "x-goog-api-key" in error["message"]
    error = assert_gemini_error(post(stack, ARRAY + "?alt=xml"), 400, "INVALID_ARGUMENT", "INVALID_VALUE")
    assert "'alt'" in error["message"] and error["details"][0]["metadata"]["field"] == "alt"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeUpstream]]:
    fake = fake_openai.start()
    try:
        with running_stack(
            tmp_path_factory.mktemp("gemini-array"), TEST_CONFIG + UPSTREAM.format(openai=fake.base_url)
        ) as stack:
            yield stack, fake
    finally:
        fake.stop()


def test_a_failure_mid_stream_is_the_last_element_and_the_array_still_closes(
    upstream: tuple[Stack, FakeUpstream],
) -> None:
    stack, fake = upstream
    fake.script(Sse(fake_openai.chat_stream(("one", " two", " three", " four")), cut=4, gap=0.05))
    reply = post(stack, "/api/v1beta/models/gpt:streamGenerateContent")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    pieces = elements(reply.body)
    error = pieces[-1]["error"]
    assert set(pieces[-1]) == {"error"}
    assert error["code"] >= 500 and error["status"] in ("UNAVAILABLE", "INTERNAL")
    assert "".join(p["candidates"][0]["content"]["parts"][0]["text"] for p in pieces[:-1]) == "one two three"
    row = usage_row(stack.db_path, reply.headers["x-request-id"])
    assert (row["surface"], row["completion_tokens"]) == ("gemini", 3)
    assert row["status"] >= 500 and row["cost"] > 0
