"""The usage API: daily totals per account over REST through Envoy, and UsageService over native gRPC."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from modelway.v1 import usage_pb2, usage_pb2_grpc
from tests.conftest import Stack
from tests.e2e.http import Reply, request
from tests.e2e.test_openai_http import assert_openai_error

USAGE = "/api/v1/api-usage"
CHAT = "/api/v1/chat/completions"
TOTALS = ("total_requests", "total_input_tokens", "total_output_tokens", "total_cost")
PROMPTS = ("Hi", "Hello there, usage report", "One two three four five six seven eight nine ten")


@dataclass(frozen=True)
class Calls:
    """What a run of chat calls reported, and the day they were made on."""

    day: dt.date
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def new_key(stack: Stack, *options: str) -> str:
    account = stack.create_account(f"usage-{uuid.uuid4().hex[:8]}")
    return stack.create_key("usage", account, *options)[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def usage(stack: Stack, secret: str, query: str = "") -> Reply:
    return request(stack.http_port, "GET", USAGE + query, None, bearer(secret))


def report(stack: Stack, secret: str, query: str = "") -> dict[str, Any]:
    """GET /api/v1/api-usage checked for status, headers and exact shape; the `data` object."""
    reply = usage(stack, secret, query)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    body = reply.json()
    assert set(body) == {"data"}
    assert set(body["data"]) == {"usage", "summary"}
    summary = body["data"]["summary"]
    assert set(summary) == {"start_date", "end_date", *TOTALS}
    for entry in [*body["data"]["usage"], summary]:
        for field in TOTALS[:3]:
            assert type(entry[field]) is int, (field, entry[field])
        assert type(entry["total_cost"]) in (int, float)
    for entry in body["data"]["usage"]:
        assert set(entry) == {"day", *TOTALS}
    # The summary is the sum of the days.
    for field in TOTALS[:3]:
        assert summary[field] == sum(entry[field] for entry in body["data"]["usage"])
    assert summary["total_cost"] == pytest.approx(sum(entry["total_cost"] for entry in body["data"]["usage"]))
    return dict(body["data"])


def micro_cost(input_tokens: int, output_tokens: int) -> int:
    """echo-1's price in micro-credits: 1 credit per 1K input and 2 per 1K output tokens, rounded up."""
    return -(-(input_tokens * 1_000_000 + output_tokens * 2_000_000) // 1000)


def make_calls(stack: Stack, secret: str) -> Calls:
    """Three chat calls that succeed and one for an unknown model: four requests, three of them paid."""
    day = utc_today()
    input_tokens = output_tokens = cost = 0
    for prompt in PROMPTS:
        body = {"model": "echo-1", "messages": [{"role": "user", "content": prompt}]}
        reply = request(stack.http_port, "POST", CHAT, body, bearer(secret))
        assert reply.status == 200, reply.body
        reported = reply.json()["usage"]
        input_tokens += reported["prompt_tokens"]
        output_tokens += reported["completion_tokens"]
        cost += micro_cost(reported["prompt_tokens"], reported["completion_tokens"])
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    assert request(stack.http_port, "POST", CHAT, body, bearer(secret)).status == 404
    assert input_tokens > 0 and output_tokens > 0
    return Calls(day, len(PROMPTS) + 1, input_tokens, output_tokens, cost / 1e6)


def zero_day(day: dt.date) -> dict[str, Any]:
    return {
        "day": day.isoformat(),
        "total_requests": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cost": 0,
    }


def test_usage_counts_requests_tokens_and_cost(stack: Stack) -> None:
    secret = new_key(stack)
    calls = make_calls(stack, secret)
    today = utc_today()
    yesterday = today - dt.timedelta(days=1)
    data = report(stack, secret, f"?start_date={yesterday}&end_date={today}")

    assert data["summary"] == {
        "start_date": yesterday.isoformat(),
        "end_date": today.isoformat(),
        "total_requests": calls.requests,
        "total_input_tokens": calls.input_tokens,
        "total_output_tokens": calls.output_tokens,
        "total_cost": pytest.approx(calls.cost, abs=1e-9),
    }
    assert calls.cost > 0
    assert [entry["day"] for entry in data["usage"]] == [yesterday.isoformat(), today.isoformat()]
    if calls.day == today:  # not across midnight: all on today, nothing on yesterday
        assert data["usage"] == [
            zero_day(yesterday),
            {
                "day": today.isoformat(),
                "total_requests": calls.requests,
                "total_input_tokens": calls.input_tokens,
                "total_output_tokens": calls.output_tokens,
                "total_cost": pytest.approx(calls.cost, abs=1e-9),
            },
        ]


def test_usage_is_reported_at_once(stack: Stack) -> None:
    secret = new_key(stack)
    today = utc_today().isoformat()
    for expected in (1, 2, 3):
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "again"}]}
        assert request(stack.http_port, "POST", CHAT, body, bearer(secret)).status == 200
        assert report(stack, secret, f"?start_date={today}&end_date={today}")["summary"]["total_requests"] == expected


def test_default_range_is_30_days_ending_today(stack: Stack) -> None:
    secret = new_key(stack)
    data = report(stack, secret)
    today = utc_today()
    days = [today - dt.timedelta(days=n) for n in range(29, -1, -1)]
    assert data["usage"] == [zero_day(day) for day in days]
    assert (data["summary"]["start_date"], data["summary"]["end_date"]) == (days[0].isoformat(), today.isoformat())


def test_start_date_defaults_to_29_days_before_end_date(stack: Stack) -> None:
    data = report(stack, new_key(stack), "?end_date=2024-03-01")
    assert (data["summary"]["start_date"], data["summary"]["end_date"]) == ("2024-02-01", "2024-03-01")
    assert len(data["usage"]) == 30
    assert data["usage"][-2]["day"] == "2024-02-29"


def test_longest_range_is_366_days(stack: Stack) -> None:
    data = report(stack, new_key(stack), "?start_date=2024-01-01&end_date=2024-12-31")
    assert len(data["usage"]) == 366
    assert (data["usage"][0]["day"], data["usage"][-1]["day"]) == ("2024-01-01", "2024-12-31")
    assert data["summary"]["total_requests"] == 0


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [
        ("?start_date=2026-13-01", "start_date", "invalid_value"),
        ("?start_date=20260101", "start_date", "invalid_value"),
        ("?start_date=2026-1-1", "start_date", "invalid_value"),
        ("?end_date=2025-02-29", "end_date", "invalid_value"),
        ("?end_date=yesterday", "end_date", "invalid_value"),
        ("?start_date=2026-01-02&end_date=2026-01-01", "start_date", "invalid_date_range"),
        ("?start_date=2024-01-01&end_date=2025-01-01", "end_date", "invalid_date_range"),
        ("?start_date=2000-01-01", "end_date", "invalid_date_range"),
    ],
)
def test_bad_dates_are_400(stack: Stack, query: str, param: str, code: str) -> None:
    reply = usage(stack, new_key(stack), query)
    assert_openai_error(reply, 400, code=code, param=param, kind="invalid_request_error")


def test_start_after_end_names_both(stack: Stack) -> None:
    today = utc_today()
    yesterday = today - dt.timedelta(days=1)
    reply = usage(stack, new_key(stack), f"?start_date={today}&end_date={yesterday}")
    assert_openai_error(reply, 400, code="invalid_date_range", param="start_date", kind="invalid_request_error")
    message = reply.json()["error"]["message"]
    assert today.isoformat() in message and yesterday.isoformat() in message


def test_accounts_see_only_their_own_usage(stack: Stack) -> None:
    a, b = new_key(stack), new_key(stack)
    calls = make_calls(stack, a)
    query = f"?start_date={calls.day - dt.timedelta(days=1)}&end_date={utc_today()}"
    assert report(stack, a, query)["summary"]["total_requests"] == calls.requests
    theirs = report(stack, b, query)
    assert all(entry[field] == 0 for entry in [*theirs["usage"], theirs["summary"]] for field in TOTALS)


def test_usage_needs_usage_read(stack: Stack) -> None:
    secret = new_key(stack, "--permissions", "chat.completions,keys.manage,models.list")
    reply = usage(stack, secret)
    assert_openai_error(reply, 403, code="insufficient_permissions", param=None, kind="permission_error")
    assert "usage.read" in reply.json()["error"]["message"]


def test_usage_needs_a_key(stack: Stack) -> None:
    reply = request(stack.http_port, "GET", USAGE)
    assert_openai_error(reply, 401, code="missing_api_key", param=None, kind="authentication_error")


# Native gRPC.


def test_grpc_get_usage_matches_rest(channel: grpc.Channel, stack: Stack) -> None:
    secret = new_key(stack)
    calls = make_calls(stack, secret)
    start, end = (calls.day - dt.timedelta(days=1)).isoformat(), utc_today().isoformat()
    ask = usage_pb2.GetUsageRequest(start_date=start, end_date=end)
    auth = [("authorization", f"Bearer {secret}")]
    typed = usage_pb2_grpc.UsageServiceStub(channel).GetUsage(ask, metadata=auth, timeout=10).data
    rest = report(stack, secret, f"?start_date={start}&end_date={end}")

    summary = typed.summary
    assert (summary.start_date, summary.end_date) == (start, end)
    totals = (summary.total_requests, summary.total_input_tokens, summary.total_output_tokens)
    assert totals == (calls.requests, calls.input_tokens, calls.output_tokens)
    assert summary.total_cost == pytest.approx(calls.cost, abs=1e-9)
    assert [{"day": d.day, **{field: getattr(d, field) for field in TOTALS}} for d in typed.usage] == rest["usage"]


def test_grpc_get_usage_errors(channel: grpc.Channel, stack: Stack) -> None:
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUsage(usage_pb2.GetUsageRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUsage(
            usage_pb2.GetUsageRequest(start_date="2026-13-01"),
            metadata=[("authorization", f"Bearer {new_key(stack)}")],
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_refused_calls_count_against_the_callers_account(stack: Stack) -> None:
    account = stack.create_account(f"refused-{uuid.uuid4().hex[:8]}")
    _, reader = stack.create_key("reader", account, "--permissions", "usage.read,models.list")
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    reply = request(stack.http_port, "POST", "/api/v1/chat/completions", body, bearer(reader))
    assert reply.status == 403
    today = report(stack, reader)["usage"][-1]
    assert (today["total_requests"], today["total_input_tokens"], today["total_cost"]) == (1, 0, 0)
