"""Credits: reserved before, settled after, never negative, never lost, under contention."""

from __future__ import annotations

import time
from collections import Counter

import openai
import pytest

from tests.conftest import Stack
from tests.e2e.burst import burst
from tests.e2e.http import request
from tests.real.postgres import connect_db

MICRO = 1_000_000


def balance(stack: Stack, account: str) -> int:
    with connect_db(stack.db_path) as db:
        return int(db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0])


def rows(stack: Stack, account: str, expected: int, timeout: float = 10) -> list[tuple[int, int, int, int]]:
    """(status, cost, prompt, completion) of the account's usage rows, once all `expected` are written."""
    deadline = time.monotonic() + timeout
    while True:
        with connect_db(stack.db_path) as db:
            found = db.execute(
                "SELECT status, cost, prompt_tokens, completion_tokens FROM usage WHERE account_id = ?", [account]
            ).fetchall()
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def test_200_concurrent_calls_race_for_the_last_credits(stack: Stack) -> None:
    account = stack.create_account("race", credits=0.5)
    _, key = stack.create_key("race", account)
    body = {"model": "echo-1", "max_tokens": 5, "messages": [{"role": "user", "content": "a b c d e f g h"}]}
    before = balance(stack, account)

    answers = await burst(stack.http_port, 200, body, key)

    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {200, 429}
    for refused in (a for a in answers if a.status == 429):
        assert refused.body["error"]["code"] == "insufficient_quota"
        assert refused.body["error"]["type"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"
    written = rows(stack, account, 200)
    assert len(written) == 200  # one row per call, refused ones included
    assert Counter(status for status, *_ in written) == statuses
    charged = [cost for status, cost, *_ in written if status == 200]
    assert all(cost > 0 for cost in charged)
    assert all(cost == 0 for status, cost, *_ in written if status != 200)
    # Charges equal the balance drop: nothing lost, nothing counted twice.
    deadline = time.monotonic() + 5
    while balance(stack, account) != before - sum(charged) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = balance(stack, account)
    assert after == before - sum(charged)
    assert 0 <= after < max(charged)  # the credits ran out: admission was tight
    # And the tokens the callers were told about are what was charged.
    told = sum(
        a.body["usage"]["prompt_tokens"] * 1000 + a.body["usage"]["completion_tokens"] * 2000
        for a in answers
        if a.status == 200
    )
    assert told == sum(charged)


def test_sdk_gets_insufficient_quota_without_retrying(stack: Stack) -> None:
    account = stack.create_account("broke", credits=0)
    _, key = stack.create_key("broke", account)
    client = openai.OpenAI(base_url=f"{stack.http_base}/api/v1", api_key=key, max_retries=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 429
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert len(rows(stack, account, 1)) == 1  # the SDK did not retry
    # A free model needs no credits.
    assert client.chat.completions.create(model="echo-mini", messages=[{"role": "user", "content": "hi"}]).choices


def test_failed_calls_cost_nothing(stack: Stack) -> None:
    account = stack.create_account("failures", credits=10)
    _, key = stack.create_key("failures", account)
    headers = {"Authorization": f"Bearer {key}"}
    for body in (
        {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}], "temperature": 7},
        {
            "model": "echo-1",
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
    ):
        assert request(stack.http_port, "POST", "/api/v1/chat/completions", body, headers).status in (400, 404)
    written = rows(stack, account, 3)
    assert [cost for _, cost, *_ in written] == [0, 0, 0]
    time.sleep(0.2)
    assert balance(stack, account) == 10 * MICRO


def test_usage_reported_equals_usage_charged(stack: Stack) -> None:
    account = stack.create_account("exact", credits=100)  # worst case: 2 x 4096 output tokens
    _, key = stack.create_key("exact", account)
    reply = request(
        stack.http_port,
        "POST",
        "/api/v1/chat/completions",
        {"model": "echo-1", "n": 2, "messages": [{"role": "user", "content": "one two three"}]},
        {"Authorization": f"Bearer {key}"},
    ).json()
    [(status, cost, prompt, completion)] = rows(stack, account, 1)
    assert (status, prompt, completion) == (200, reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"])
    assert cost == prompt * 1000 + completion * 2000  # 1 credit per 1K in, 2 per 1K out
