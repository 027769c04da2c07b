"""Per-minute limits, daily token budgets and input caps, with the gateway's clock in the test's hands."""

from __future__ import annotations

import calendar
import time
from collections import Counter

import openai
import pytest

from tests.conftest import ClockedStack
from tests.e2e.burst import burst
from tests.e2e.http import request

CHAT = "/api/v1/chat/completions"
HELLO = {"model": "echo-1", "messages": [{"role": "user", "content": "hello there"}]}


def fresh_minute(clocked: ClockedStack, second: float) -> int:
    """Moves the gateway's clock to `second` into a minute no test has used; returns that minute's start."""
    start = (int(clocked.clock.now()) // 60 + 2) * 60
    clocked.clock.set(start + second)
    return start


def chat(clocked: ClockedStack, key: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    reply = request(clocked.stack.http_port, "POST", CHAT, body or HELLO, {"Authorization": f"Bearer {key}"})
    return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.json()


async def test_burst_admits_exactly_the_key_limit(clocked: ClockedStack) -> None:
    _, key = clocked.stack.create_key("burst", "", "--rate-limit", "10")
    window = fresh_minute(clocked, 5)
    answers = await burst(clocked.stack.http_port, 100, HELLO, key)

    assert Counter(a.status for a in answers) == {200: 10, 429: 90}
    admitted = [a for a in answers if a.status == 200]
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted) == list(range(10))
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "10"
        assert answer.headers["x-ratelimit-reset-requests"] == str(window + 60)
    for refused in (a for a in answers if a.status == 429):
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(refused.headers["retry-after"]) <= 55
        assert refused.body["error"]["type"] == "requests"
        assert refused.body["error"]["code"] == "rate_limit_exceeded"
        assert "this key" in refused.body["error"]["message"]


async def test_global_limit_says_it_is_global(clocked: ClockedStack) -> None:
    # The clocked gateway allows 40 requests per minute over all keys.
    keys = [clocked.stack.create_key(f"global-{i}")[1] for i in range(2)]
    fresh_minute(clocked, 1)
    answers = [a for key in keys for a in await burst(clocked.stack.http_port, 30, HELLO, key)]
    assert Counter(a.status for a in answers) == {200: 40, 429: 20}
    for refused in (a for a in answers if a.status == 429):
        assert refused.body["error"]["code"] == "global_rate_limit_exceeded"
        assert "global" in refused.body["error"]["message"]
        assert "retry-after" in refused.headers


def test_limit_window_resets_on_the_minute(clocked: ClockedStack) -> None:
    _, key = clocked.stack.create_key("window", "", "--rate-limit", "2")
    start = fresh_minute(clocked, 30)
    assert [chat(clocked, key)[0] for _ in range(3)] == [200, 200, 429]
    clocked.clock.set(start + 60.5)
    status, headers, _ = chat(clocked, key)
    assert status == 200
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-reset-requests"] == str(start + 120)


def test_openai_sdk_sees_rate_limit_error_and_retries_after_waiting(clocked: ClockedStack) -> None:
    _, key = clocked.stack.create_key("sdk-retry", "", "--rate-limit", "1")
    base = f"http://127.0.0.1:{clocked.stack.http_port}/api/v1"
    messages = [{"role": "user", "content": "hi"}]
    start = fresh_minute(clocked, 58.6)
    no_retry = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    no_retry.chat.completions.create(model="echo-1", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as caught:
        no_retry.chat.completions.create(model="echo-1", messages=messages)  # type: ignore[arg-type]
    assert caught.value.code == "rate_limit_exceeded"
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 2

    # The SDK's own retry waits as told, by which time the window has turned.
    retrying = openai.OpenAI(base_url=base, api_key=key, max_retries=2)
    began = time.monotonic()
    response = retrying.chat.completions.with_raw_response.create(model="echo-1", messages=messages)  # type: ignore[arg-type]
    assert response.parse().choices[0].message.content == "Echo: hi"
    assert clocked.clock.now() >= start + 60
    assert time.monotonic() - began >= retry_after * 0.5
    assert response.retries_taken >= 1


def test_daily_budget_is_refused_until_utc_midnight(clocked: ClockedStack) -> None:
    _, key = clocked.stack.create_key("budget", "", "--daily-token-budget", "30")
    midnight = calendar.timegm((2031, 3, 15, 0, 0, 0))
    clocked.clock.set(midnight - 90)  # 23:58:30 UTC
    statuses = []
    for _ in range(5):
        status, headers, body = chat(clocked, key)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429 and statuses[:-1] == [200] * (len(statuses) - 1)
    assert len(statuses) >= 3  # each call uses ~12 tokens of the 30
    assert body["error"]["type"] == "tokens"
    assert body["error"]["code"] == "daily_token_budget_exceeded"
    assert "30" in body["error"]["message"]
    assert headers["x-should-retry"] == "false"
    assert 80 <= int(headers["retry-after"]) <= 90

    clocked.clock.set(midnight + 5)
    assert chat(clocked, key)[0] == 200


def test_budget_exceeded_stops_the_sdk_from_retrying(clocked: ClockedStack) -> None:
    _, key = clocked.stack.create_key("budget-sdk", "", "--daily-token-budget", "1")
    fresh_minute(clocked, 3)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{clocked.stack.http_port}/api/v1", api_key=key, max_retries=3)
    client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
    began = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "daily_token_budget_exceeded"
    assert time.monotonic() - began < 1  # no retry: the header said it cannot help


def test_input_above_the_plan_cap_is_400_with_the_cap(clocked: ClockedStack) -> None:
    account = clocked.stack.create_account("small-plan", plan="small")
    _, key = clocked.stack.create_key("cap", account)
    fresh_minute(clocked, 2)
    long_text = " ".join(["word"] * 400)
    status, _, body = chat(clocked, key, {"model": "echo-1", "messages": [{"role": "user", "content": long_text}]})
    assert status == 400
    assert body["error"]["code"] == "input_too_large"
    assert body["error"]["param"] == "messages"
    assert "300" in body["error"]["message"]
    assert chat(clocked, key)[0] == 200
