"""Keys in the store: created keys work, secrets are never stored, deleted keys stop working."""

from __future__ import annotations

import time

from tests.conftest import Stack
from tests.e2e.http import request
from tests.real.postgres import connect_db, store_files


def chat_status(stack: Stack, secret: str) -> int:
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    return request(
        stack.http_port, "POST", "/api/v1/chat/completions", body, {"Authorization": f"Bearer {secret}"}
    ).status


def wait_for_status(stack: Stack, secret: str, expected: int, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while (status := chat_status(stack, secret)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def test_key_lifecycle_and_secret_never_stored(stack: Stack) -> None:
    key_id, secret = stack.create_key("lifecycle")
    assert secret.startswith("mwt-") and len(secret) >= 4 + 43
    # Created by another process while the server runs: usable at once.
    assert chat_status(stack, secret) == 200

    stored = b"".join(data for _, data in store_files(stack.db_path, stack.workdir))
    assert secret.encode() not in stored
    assert secret[4:].encode() not in stored
    listing = stack.cli("keys", "list").stdout
    assert key_id in listing and secret not in listing

    stack.cli("keys", "delete", key_id)
    assert wait_for_status(stack, secret, 401) == 401


def test_usage_row_per_call(stack: Stack) -> None:
    key_id, secret = stack.create_key("usage")
    assert chat_status(stack, secret) == 200
    assert chat_status(stack, secret + "x") == 401

    def rows() -> list[tuple[str, str, int, int, int]]:
        with connect_db(stack.db_path) as db:
            return db.execute(
                "SELECT key_id, model, prompt_tokens, completion_tokens, status FROM usage WHERE key_id = ?", [key_id]
            ).fetchall()

    deadline = time.monotonic() + 5
    while not rows() and time.monotonic() < deadline:
        time.sleep(0.05)
    [(row_key, model, prompt, completion, status)] = rows()
    assert (row_key, model, status) == (key_id, "echo-1", 200)
    assert prompt > 0 and completion == 3  # "Echo", ":", " hi"
