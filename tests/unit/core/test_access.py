from __future__ import annotations

import pytest

from modelway.config import Config, PlanConfig
from modelway.core.access import Gate, credential
from modelway.core.directory import Caller
from modelway.core.limits import RateLimiter
from modelway.errors import GatewayError, Reason
from modelway.store import AccountRecord, KeyRecord
from tests.unit.core.test_limits import FixedClock


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"authorization": "Bearer mw-1"}, "mw-1"),
        ({"authorization": "bearer   mw-1 "}, "mw-1"),
        ({"x-api-key": "mw-2"}, "mw-2"),
        ({"x-goog-api-key": "mw-3"}, "mw-3"),
        ({"x-envoy-original-path": "/api/v1beta/models/m:generateContent?alt=sse&key=mw-4"}, "mw-4"),
        ({"x-envoy-original-path": "/api/v1/models/m:streamGenerateContent?key=mw-4"}, "mw-4"),
        # ?key= is Gemini's alone: on any other route it is no credential.
        ({"x-envoy-original-path": "/api/v1/chat/completions?key=mw-4"}, ""),
        ({"x-envoy-original-path": "/api/v1/api-keys?key=mw-4"}, ""),
        ({"authorization": "Basic abc", "x-api-key": "mw-5"}, "mw-5"),
        ({"authorization": "Bearer mw-6", "x-api-key": "other"}, "mw-6"),
        ({"authorization": "Bearer "}, ""),
        ({}, ""),
    ],
)
def test_credential_header_styles(metadata: dict[str, str], expected: str) -> None:
    assert credential(metadata) == expected


def _caller(rate_limit: int | None = None) -> Caller:
    plan = PlanConfig(
        "p",
        chat_requests_per_minute=3,
        image_requests_per_minute=1,
        max_keys=1,
        daily_token_budget=9,
        max_input_tokens=9,
    )
    key = KeyRecord("key_1", "acct", "k", "hash", "hint", 0, permissions=("chat.completions",), rate_limit=rate_limit)
    return Caller(key=key, account=AccountRecord("acct", "a", "p", 0), plan=plan)


def _gate() -> Gate:
    config = Config(plans=(PlanConfig("free", 1, 1, 1, 1, 1),))
    return Gate(directory=None, limiter=RateLimiter(FixedClock(1_800_000_000)), config=config)  # type: ignore[arg-type]


async def test_images_have_their_own_plan_limit_and_counter() -> None:
    gate, caller = _gate(), _caller()
    assert dict(await gate.admit(caller, "images"))["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(GatewayError) as caught:
        await gate.admit(caller, "images")
    assert caught.value.reason is Reason.RATE_LIMITED
    # Chat is counted apart, with its own plan limit.
    assert dict(await gate.admit(caller, "chat"))["x-ratelimit-remaining-requests"] == "2"


async def test_a_keys_own_rate_limit_replaces_the_plans_chat_limit_only() -> None:
    gate, caller = _gate(), _caller(rate_limit=7)
    assert dict(await gate.admit(caller, "chat"))["x-ratelimit-limit-requests"] == "7"
    assert dict(await gate.admit(caller, "images"))["x-ratelimit-limit-requests"] == "1"
