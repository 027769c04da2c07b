"""The catalog and chat/send dialect: its error table, its request checks, and what a model shows."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelway.config import Config, ConfigError, ModelConfig, ProviderConfig
from modelway.core.catalog import Catalog
from modelway.errors import REASONS, GatewayError, Reason
from modelway.surfaces.catalog import CHAT_SEND, SendRequest, model_json, page_of, parse_send_body, type_of


def test_every_reason_has_a_row_with_the_documented_words() -> None:
    for reason in REASONS:
        status, body = CHAT_SEND.error_response(GatewayError(reason, "own words"))
        assert orjson.loads(body)["success"] is False
        assert status in (400, 401, 403, 404, 409, 422, 429, 500, 501, 502, 503, 504)
    assert CHAT_SEND.error_response(GatewayError(Reason.API_KEY_EXPIRED, "expired on ...")) == (
        401,
        b'{"success":false,"message":"Invalid API key"}',
    )
    assert CHAT_SEND.error_response(GatewayError(Reason.INSUFFICIENT_CREDITS, "x"))[0] == 429
    assert orjson.loads(CHAT_SEND.error_response(GatewayError(Reason.INSUFFICIENT_CREDITS, "x"))[1]) == {
        "success": False,
        "message": "No points remaining",
    }
    assert CHAT_SEND.status(GatewayError(Reason.INVALID_TYPE, "x")) == 422
    assert CHAT_SEND.status(GatewayError(Reason.INVALID_BODY, "x")) == 400
    assert CHAT_SEND.status(GatewayError(Reason.EMPTY_MESSAGE, "x")) == 400
    assert CHAT_SEND.status(GatewayError(Reason.RATE_LIMITED, "x")) == 429
    assert CHAT_SEND.status(GatewayError(Reason.MODEL_NOT_ALLOWED, "x")) == 403
    # A follow-up that lost the race to another server process: its own words, 409.
    assert CHAT_SEND.error_response(GatewayError(Reason.CONVERSATION_CHANGED, "Send it again.")) == (
        409,
        b'{"success":false,"message":"Send it again."}',
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model_id": "echo-1", "message": "hi"}, SendRequest("echo-1", "hi")),
        ({"model_id": 7, "message": "hi", "conversation_id": 3, "extra": 1}, SendRequest("7", "hi", 3)),
        ({"model_id": 7, "message": "hi", "conversation_id": None}, SendRequest("7", "hi")),
    ],
)
def test_send_bodies_that_parse(body: Any, expected: SendRequest) -> None:
    assert parse_send_body(orjson.dumps(body)) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nope", Reason.INVALID_BODY),
        (b"[1]", Reason.INVALID_BODY),
        (b'{"message": "hi"}', Reason.MISSING_REQUIRED_PARAMETER),
        (b'{"model_id": 1.5, "message": "hi"}', Reason.INVALID_TYPE),
        (b'{"model_id": 1, "message": ""}', Reason.EMPTY_MESSAGE),
        (b'{"model_id": 1, "message": " "}', Reason.EMPTY_MESSAGE),
        (b'{"model_id": 1, "message": ["hi"]}', Reason.INVALID_TYPE),
        (b'{"model_id": 1, "message": "hi", "conversation_id": true}', Reason.INVALID_TYPE),
        (b'{"model_id": 1, "message": "hi", "conversation_id": -2}', Reason.INTEGER_BELOW_MIN),
    ],
)
def test_send_bodies_that_fail(body: bytes, reason: Reason) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_send_body(body)
    assert caught.value.reason == reason


def test_query_values() -> None:
    assert page_of("") == 1 and page_of("3") == 3
    for bad in ("0", "-1", "1.5", "x", "\u0663", "99999999"):
        with pytest.raises(GatewayError):
            page_of(bad)
    assert type_of("") == "" and type_of("embedding") == "embedding"
    with pytest.raises(GatewayError):
        type_of("video")


def _config(*models: ModelConfig) -> Config:
    return Config(providers=(ProviderConfig(name="echo", kind="echo"),), models=models)


def test_catalog_fields_default_and_numbers_follow_the_list() -> None:
    config = _config(ModelConfig(id="a", provider="echo"), ModelConfig(id="b", provider="echo", number=9))
    first, second = config.models
    assert (first.number, first.slug, first.name) == (1, "a", "a")
    assert second.number == 9
    catalog = Catalog(config.models)
    assert catalog.find("1") is first and catalog.find("9") is second and catalog.find("b") is second
    assert catalog.find("2") is None and catalog.find("x") is None


def test_catalog_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="digits"):
        ModelConfig(id="a", provider="echo", slug="123")
    with pytest.raises(ConfigError, match="capabilities"):
        ModelConfig(id="a", provider="echo", capabilities=("telepathy",))
    with pytest.raises(ConfigError, match="number"):
        _config(ModelConfig(id="a", provider="echo"), ModelConfig(id="b", provider="echo", number=1))
    with pytest.raises(ConfigError, match="slug"):
        _config(ModelConfig(id="a", provider="echo"), ModelConfig(id="b", provider="echo", slug="a"))


def test_a_model_shows_no_upstream_and_hides_private_prices() -> None:
    model = ModelConfig(
        id="m", provider="secret-provider", upstream_model="upstream-x", system_prompt="hidden", private_prices=True
    )
    shown = orjson.dumps(model_json(model)).decode()
    for secret in ("secret-provider", "upstream-x", "hidden"):
        assert secret not in shown
    assert model_json(model)["pricing"] is None


def test_search_and_pages() -> None:
    models = [ModelConfig(id=f"m{i}", provider="echo", number=i, category="c" if i % 2 else "") for i in range(1, 46)]
    catalog = Catalog(models)
    page = catalog.search(page=3)
    assert [m.number for m in page.models] == [41, 42, 43, 44, 45]
    assert (page.page.total, page.page.pages) == (45, 3)
    assert catalog.search(category="C").page.total == 23
    assert [(c.name, c.model_count) for c in catalog.categories()] == [("c", 23)]
    assert [m.id for m in catalog.search(query="M4").models] == ["m4", *(f"m{i}" for i in range(40, 46))]
