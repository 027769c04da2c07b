"""The public model catalog through the real Envoy and server: GET /api/models, /api/models/{id_or_slug},
/api/categories (no key), and CatalogService for native callers."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import grpc
import pytest

from modelway.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import Stack, running_stack
from tests.e2e.catalog_config import BULK, catalog_config, data_of, error_of
from tests.e2e.http import Reply, request


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("catalog"), catalog_config()) as stack:
        yield stack


def get(stack: Stack, path: str, headers: dict[str, str] | None = None) -> Reply:
    reply = request(stack.http_port, "GET", path, headers=headers)
    assert reply.headers.get("X-Request-Id"), (reply.status, reply.body)
    return reply


# The models every page lists, in order of numeric id: the test config's three, then the image,
# embedding and bulk models, then gpt (number 100).
ALL = 3 + 2 + BULK + 1


def test_list_pages_of_twenty_with_pagination_info(catalog: Stack) -> None:
    first = data_of(get(catalog, "/api/models"))
    assert list(first) == ["models", "pagination"]
    assert len(first["models"]) == 20
    assert first["pagination"] == {"page": 1, "per_page": 20, "total": ALL, "total_pages": 2, "has_more": True}
    second = data_of(get(catalog, "/api/models?page=2"))
    assert len(second["models"]) == ALL - 20
    assert second["pagination"]["has_more"] is False
    ids = [m["id"] for m in first["models"] + second["models"]]
    assert ids == sorted(ids) and len(set(ids)) == ALL and ids[-1] == 100
    past = data_of(get(catalog, "/api/models?page=9"))
    assert past["models"] == [] and past["pagination"]["page"] == 9


def test_search_covers_name_slug_and_description_in_any_case(catalog: Stack) -> None:
    by_name = data_of(get(catalog, "/api/models?q=gpt%20FAKE"))["models"]
    assert [m["slug"] for m in by_name] == ["gpt-fake"]
    by_slug = data_of(get(catalog, "/api/models?q=echo-mi"))["models"]
    assert [m["slug"] for m in by_slug] == ["echo-mini"]
    by_description = data_of(get(catalog, "/api/models?q=vectors"))["models"]
    assert [m["slug"] for m in by_description] == ["embed-1"]
    nothing = data_of(get(catalog, "/api/models?q=zebra"))
    assert nothing["models"] == [] and nothing["pagination"]["total"] == 0


def test_filters_by_category_and_type_and_combine(catalog: Stack) -> None:
    bulk = data_of(get(catalog, "/api/models?category=bulk&page=2"))
    assert bulk["pagination"]["total"] == BULK and len(bulk["models"]) == BULK - 20
    images = data_of(get(catalog, "/api/models?type=image"))["models"]
    assert [m["slug"] for m in images] == ["echo-image"]
    embeddings = data_of(get(catalog, "/api/models?type=embedding"))["models"]
    assert [m["type"] for m in embeddings] == ["embedding"]
    both = data_of(get(catalog, "/api/models?category=general&type=chat&q=fake"))["models"]
    assert [m["slug"] for m in both] == ["gpt-fake"]
    assert data_of(get(catalog, "/api/models?category=images&type=chat"))["models"] == []


def test_bad_query_values_are_422_in_the_envelope(catalog: Stack) -> None:
    assert "page" in error_of(get(catalog, "/api/models?page=0"), 422)
    assert "page" in error_of(get(catalog, "/api/models?page=abc"), 422)
    # More digits than int() converts (4,300): still the 422, not a 500.
    assert "page" in error_of(get(catalog, "/api/models?page=" + "9" * 5000), 422)
    assert "type" in error_of(get(catalog, "/api/models?type=video"), 422)
    assert "q" in error_of(get(catalog, "/api/models?q=" + "x" * 300), 422)


def test_a_model_by_numeric_id_and_by_slug_shows_only_safe_fields(catalog: Stack) -> None:
    by_number = data_of(get(catalog, "/api/models/100"))
    by_slug = data_of(get(catalog, "/api/models/gpt-fake"))
    assert by_number == by_slug
    assert by_number == {
        "id": 100,
        "slug": "gpt-fake",
        "name": "GPT Fake",
        "description": "A scripted OpenAI upstream, for tests.",
        "category": "general",
        "type": "chat",
        "capabilities": {"vision": True, "tools": True, "reasoning": False, "json_mode": False, "streaming": False},
        "context_length": 8000,
        "max_output_tokens": 64,
        # The operator marked them private.
        "pricing": None,
        "created": 0,
        "owned_by": "modelway",
    }
    text = get(catalog, "/api/models/gpt-fake").body.decode()
    for secret in ("oai", "gpt-4o-mini", "127.0.0.1", "base_url", "provider"):
        assert secret not in text


def test_public_prices_are_shown(catalog: Stack) -> None:
    echo = data_of(get(catalog, "/api/models/1"))
    assert echo["slug"] == "echo-1" and echo["context_length"] is None and echo["category"] is None
    assert echo["pricing"] == {
        "currency": "credits",
        "input_per_1k_tokens": 1.0,
        "output_per_1k_tokens": 2.0,
        "per_request": 0.0,
        "per_image": 0.0,
    }


def test_unknown_model_is_404(catalog: Stack) -> None:
    assert error_of(get(catalog, "/api/models/999"), 404) == "Model not found"
    for number in (str(2**63), str(2**64), "9" * 5000):
        assert error_of(get(catalog, f"/api/models/{number}"), 404) == "Model not found"
    assert error_of(get(catalog, "/api/models/no-such-model"), 404) == "Model not found"
    # The catalog's slug, not the internal id, names a model here.
    assert error_of(get(catalog, "/api/models/gpt"), 404) == "Model not found"
    assert error_of(get(catalog, "/api/models/" + quote("a/b", safe="")), 404) == "Model not found"


def test_categories_are_the_active_ones_with_counts(catalog: Stack) -> None:
    assert data_of(get(catalog, "/api/categories")) == [
        {"name": "bulk", "model_count": BULK},
        {"name": "embeddings", "model_count": 1},
        {"name": "general", "model_count": 1},
        {"name": "images", "model_count": 1},
    ]


def test_no_key_is_needed_and_a_bad_one_does_not_matter(catalog: Stack) -> None:
    assert data_of(get(catalog, "/api/categories", {"X-API-Key": "mwt-nonsense"}))


def test_envoys_own_replies_use_the_envelope(catalog: Stack) -> None:
    reply = request(catalog.http_port, "DELETE", "/api/models/1")
    assert "Invalid URL" in error_of(reply, 404)
    reply = request(catalog.http_port, "POST", "/api/categories", "{}")
    assert "Invalid URL" in error_of(reply, 404)


def test_unread_query_parameters_are_dropped(catalog: Stack) -> None:
    # ?model= must not rebind the path's model.
    assert data_of(get(catalog, "/api/models/1?model=100"))["id"] == 1


def test_native_catalog_service(catalog: Stack) -> None:
    for target in (catalog.grpc_target, catalog.envoy_target):
        with grpc.insecure_channel(target) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            listed = stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(category="bulk", page=2), timeout=10)
            assert len(listed.models) == BULK - 20
            assert (listed.page.page, listed.page.total, listed.page.total_pages) == (2, BULK, 2)
            model = stub.GetCatalogModel(catalog_pb2.GetCatalogModelRequest(model="gpt-fake"), timeout=10).model
            assert model.id == 100 and list(model.capabilities) == ["vision", "tools"]
            assert not model.HasField("pricing") and model.context_length == 8000
            echo = stub.GetCatalogModel(catalog_pb2.GetCatalogModelRequest(model="1"), timeout=10).model
            assert echo.pricing.output_per_1k_tokens == 2.0 and not echo.HasField("context_length")
            categories = stub.ListCategories(catalog_pb2.ListCategoriesRequest(), timeout=10).categories
            assert [c.name for c in categories] == ["bulk", "embeddings", "general", "images"]
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetCatalogModel(catalog_pb2.GetCatalogModelRequest(model="nope"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(type="video"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
