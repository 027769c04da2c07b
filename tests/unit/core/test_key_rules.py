"""The one rule for key names and for a plan's key count (used by the API and the CLI alike)."""

from __future__ import annotations

import pytest

from modelway.config import PlanConfig
from modelway.core.key_admin import MAX_NAME, check_key_count, key_name
from modelway.errors import GatewayError, Reason

PLAN = PlanConfig("small", 10, 2, 2, 200, 300)


def test_a_name_is_trimmed() -> None:
    assert key_name("  ci deploy  ") == "ci deploy"
    assert key_name("clé \u2013 prod") == "clé \u2013 prod"


@pytest.mark.parametrize(
    "name",
    ["a\x00b", "tab\there", "new\nline", "bell\x07", "esc\x1b[31m", "del\x7f", "zero\u200bwidth", "line\u2028sep"],
)
def test_control_and_invisible_characters_are_refused(name: str) -> None:
    with pytest.raises(GatewayError) as caught:
        key_name(name)
    assert caught.value.reason is Reason.INVALID_VALUE and caught.value.param == "name"
    assert "U+" in caught.value.message


def test_empty_and_too_long_names() -> None:
    with pytest.raises(GatewayError) as caught:
        key_name("   ")
    assert caught.value.reason is Reason.MISSING_REQUIRED_PARAMETER
    assert key_name("x" * MAX_NAME) == "x" * MAX_NAME
    with pytest.raises(GatewayError) as caught:
        key_name("x" * (MAX_NAME + 1))
    assert caught.value.reason is Reason.INVALID_VALUE


def test_the_plan_key_count() -> None:
    check_key_count(PLAN, 1)
    with pytest.raises(GatewayError) as caught:
        check_key_count(PLAN, 2)
    assert caught.value.reason is Reason.KEY_LIMIT_REACHED
    assert caught.value.message == (
        "The small plan allows 2 API key(s) per account and this account has 2. Delete a key or change plan."
    )
