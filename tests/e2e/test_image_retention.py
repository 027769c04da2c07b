"""Generated image files expire: past `[store] image_retention_hours` their URL is a 404 in OpenAI's shape,
and the sweep deletes the file."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import request

# 0.0006 h: about 2.2 s.
RETENTION_SECONDS = 0.0006 * 3600
CONFIG = (
    TEST_CONFIG.replace("[store]\n", "[store]\nimage_retention_hours = 0.0006\n", 1)
    + """
[[models]]
id = "echo-image"
provider = "echo"
type = "image"
"""
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("image-retention"), CONFIG) as started:
        yield started


def test_an_expired_image_url_is_404_and_its_file_is_deleted(stack: Stack) -> None:
    body = {"model": "echo-image", "prompt": "short-lived", "size": "256x256", "n": 2}
    reply = request(
        stack.http_port, "POST", "/api/v1/images/generations", body, {"Authorization": f"Bearer {stack.api_key}"}
    )
    assert reply.status == 200, reply.body
    made = time.monotonic()
    paths = [image["url"].removeprefix(stack.http_base) for image in reply.json()["data"]]
    files = stack.workdir / "images"
    names = {path.rsplit("/", 1)[1] for path in paths}
    assert names <= {entry.name for entry in files.iterdir()}
    assert all(request(stack.http_port, "GET", path).status == 200 for path in paths)

    deadline = made + RETENTION_SECONDS + 10
    while request(stack.http_port, "GET", paths[0]).status == 200:
        assert time.monotonic() < deadline, "the image outlived its retention"
        time.sleep(0.2)
    # Not before its time (the file's clock starts a moment before the answer's).
    assert time.monotonic() - made >= RETENTION_SECONDS - 0.5
    for path in paths:
        gone = request(stack.http_port, "GET", path)
        assert gone.status == 404
        error = gone.json()["error"]
        assert (error["code"], error["type"]) == ("not_found", "invalid_request_error")
    while names & {entry.name for entry in files.iterdir()}:
        assert time.monotonic() < deadline, "the sweep left expired files behind"
        time.sleep(0.2)
