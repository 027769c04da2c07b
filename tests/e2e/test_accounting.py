"""Usage accounting as a caller's actions produce it: cut streams are metered for what was sent."""

from __future__ import annotations

import http.client
import json
import time
import uuid

from tests.conftest import Stack
from tests.real.postgres import connect_db


def usage_row(stack: Stack, request_id: str, timeout: float = 5) -> tuple[int, str, int, int, int]:
    """The row of the call whose answer carried X-Request-Id `request_id` (the gateway's own id)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect_db(stack.db_path) as db:
            row = db.execute(
                "SELECT status, error_code, prompt_tokens, completion_tokens, cost FROM usage WHERE request_id = ?",
                [request_id],
            ).fetchone()
        if row is not None:
            return row  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no usage row for {request_id}")


def test_client_disconnect_mid_stream_is_metered_for_what_was_sent(stack: Stack) -> None:
    request_id = f"cut-{uuid.uuid4()}"
    words = " ".join(f"w{i}" for i in range(300))  # ~300 tokens at 20 ms each: ~6 s if not cut
    body = {"model": "echo-slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    connection.request(
        "POST",
        "/api/v1/chat/completions",
        body=json.dumps(body),
        headers={
            "Authorization": f"Bearer {stack.api_key}",
            "Content-Type": "application/json",
            "X-Client-Request-Id": request_id,
        },
    )
    response = connection.getresponse()
    assert response.status == 200
    request_id = response.headers["x-request-id"]  # the gateway's own id, not the caller's
    received = b""
    while received.count(b"\n\n") < 5:
        received += response.read1(4096)
    connection.close()

    status, error_code, prompt_tokens, completion_tokens, cost = usage_row(stack, request_id)
    assert (status, error_code) == (499, "client_closed")
    assert prompt_tokens > 300
    # At least what we saw arrived; far less than the whole answer was produced.
    assert 5 <= completion_tokens < 100
    # Charged for what was delivered (1 credit per 1K in, 2 per 1K out), not the worst case.
    assert cost == prompt_tokens * 1000 + completion_tokens * 2000


def test_each_streamed_call_leaves_exactly_one_row(stack: Stack) -> None:
    ids = [f"ok-{uuid.uuid4()}" for _ in range(3)]
    for request_id in ids:
        connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
        connection.request(
            "POST",
            "/api/v1/chat/completions",
            body=json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "a b"}], "stream": True}),
            headers={"Authorization": f"Bearer {stack.api_key}", "X-Client-Request-Id": request_id},
        )
        response = connection.getresponse()
        assert response.read().endswith(b"data: [DONE]\n\n")
        ids[ids.index(request_id)] = response.headers["x-request-id"]  # the gateway's own id
        connection.close()
    for request_id in ids:
        assert usage_row(stack, request_id)[:2] == (200, "")
    with connect_db(stack.db_path) as db:
        counts = db.execute(
            f"SELECT COUNT(*) FROM usage WHERE request_id IN ({','.join('?' * len(ids))})", ids
        ).fetchone()
    assert counts == (3,)
