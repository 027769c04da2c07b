"""The keys API: REST through Envoy (exact statuses and JSON) and KeysService over native gRPC."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from modelway.v1 import keys_pb2, keys_pb2_grpc
from tests.conftest import Stack
from tests.e2e.http import Reply, request
from tests.e2e.test_openai_http import assert_openai_error

KEYS = "/api/v1/api-keys"
CHAT = "/api/v1/chat/completions"
MODELS = "/api/v1/models"
MASK = "••••••••"
KEY_FIELDS = {
    "id",
    "key",
    "name",
    "created_at",
    "last_used_at",
    "permissions",
    "expires_at",
    "is_enabled",
    "rate_limit",
    "daily_token_budget",
    "allowed_models",
}
DEFAULT_PERMISSIONS = ["chat.completions", "images.generations", "models.list"]
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
DAY = 86_400


@dataclass(frozen=True)
class Admin:
    """An account of its own and a key of it that may do everything."""

    account: str
    key_id: str
    secret: str


def new_admin(stack: Stack, plan: str = "tester", *options: str) -> Admin:
    account = stack.create_account(f"keys-{uuid.uuid4().hex[:8]}", plan)
    key_id, secret = stack.create_key("admin", account, *options)
    return Admin(account, key_id, secret)


@pytest.fixture
def admin(stack: Stack) -> Admin:
    return new_admin(stack)


@pytest.fixture(scope="module")
def validation_admin(stack: Stack) -> Admin:
    """Shared by the validation cases only: none of them may create anything."""
    return new_admin(stack)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def keys_call(stack: Stack, method: str, secret: str, path: str = KEYS, body: dict[str, Any] | None = None) -> Reply:
    return request(stack.http_port, method, path, body, bearer(secret))


def chat(stack: Stack, secret: str, model: str = "echo-1") -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello keys"}]}
    return request(stack.http_port, "POST", CHAT, body, bearer(secret))


def ok_json(reply: Reply) -> Any:
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    assert not [name for name in reply.headers if name.lower().startswith(("grpc-", "x-http-status", "x-error"))]
    return reply.json()


def epoch(stamp: str) -> float:
    assert RFC3339_UTC.fullmatch(stamp), stamp
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def assert_key_shape(item: dict[str, Any]) -> None:
    assert set(item) == KEY_FIELDS
    assert re.fullmatch(r"key_\w+", item["id"])
    assert isinstance(item["name"], str)
    assert RFC3339_UTC.fullmatch(item["created_at"]), item["created_at"]
    assert item["last_used_at"] is None or RFC3339_UTC.fullmatch(item["last_used_at"])
    assert item["expires_at"] is None or RFC3339_UTC.fullmatch(item["expires_at"])
    assert isinstance(item["permissions"], list) and all(isinstance(p, str) for p in item["permissions"])
    assert isinstance(item["is_enabled"], bool)
    assert item["rate_limit"] is None or type(item["rate_limit"]) is int
    assert item["daily_token_budget"] is None or type(item["daily_token_budget"]) is int
    assert isinstance(item["allowed_models"], list)


def listing(stack: Stack, secret: str) -> dict[str, dict[str, Any]]:
    """GET /api/v1/api-keys checked for shape and masking; the keys by id."""
    body = ok_json(keys_call(stack, "GET", secret))
    assert set(body) == {"data"}
    assert isinstance(body["data"], list)
    for item in body["data"]:
        assert_key_shape(item)
        assert item["key"] == MASK
    return {item["id"]: item for item in body["data"]}


def create(stack: Stack, secret: str, **fields: Any) -> dict[str, Any]:
    """POST /api/v1/api-keys; the new key, its secret in `key`."""
    body = ok_json(keys_call(stack, "POST", secret, body=fields))
    assert set(body) == {"data"}
    assert_key_shape(body["data"])
    assert body["data"]["key"].startswith("mwt-")
    return dict(body["data"])


def update(stack: Stack, secret: str, key_id: str, **fields: Any) -> dict[str, Any]:
    body = ok_json(keys_call(stack, "PATCH", secret, f"{KEYS}/{key_id}", fields))
    assert set(body) == {"data"}
    assert_key_shape(body["data"])
    assert body["data"]["key"] == MASK
    return dict(body["data"])


def assert_unknown_key(reply: Reply) -> None:
    assert_openai_error(reply, 404, code="api_key_not_found", param="id", kind="invalid_request_error")


# Listing.


def test_list_shape_masking_and_last_use(stack: Stack, admin: Admin) -> None:
    before = time.time()
    fresh = create(stack, admin.secret, name="fresh")
    keys = listing(stack, admin.secret)
    assert set(keys) == {admin.key_id, fresh["id"]}
    assert keys[admin.key_id]["name"] == "admin"
    assert keys[fresh["id"]]["name"] == "fresh"
    for item in keys.values():
        assert before - 60 <= epoch(item["created_at"]) <= time.time() + 1
        assert item["expires_at"] is None
        assert item["is_enabled"] is True
    # The admin key has just listed; the fresh one was never used.
    assert keys[admin.key_id]["last_used_at"] is not None
    assert keys[fresh["id"]]["last_used_at"] is None

    used = time.time()
    assert chat(stack, fresh["key"]).status == 200
    last_used = listing(stack, admin.secret)[fresh["id"]]["last_used_at"]
    assert last_used is not None
    assert int(used) <= epoch(last_used) <= time.time() + 1


def test_list_without_keys_manage_is_403(stack: Stack) -> None:
    plain = new_admin(stack, "tester", "--permissions", "chat.completions,models.list,usage.read")
    for method, body in (("GET", None), ("POST", {"name": "x"})):
        reply = keys_call(stack, method, plain.secret, body=body)
        assert_openai_error(reply, 403, code="insufficient_permissions", param=None, kind="permission_error")
        assert "keys.manage" in reply.json()["error"]["message"]


def test_list_without_key_is_401(stack: Stack) -> None:
    reply = request(stack.http_port, "GET", KEYS)
    assert_openai_error(reply, 401, code="missing_api_key", param=None, kind="authentication_error")
    reply = keys_call(stack, "GET", "mwt-not-a-key")
    assert_openai_error(reply, 401, code="invalid_api_key", param=None, kind="authentication_error")


# Creating.


def test_create_returns_secret_once_with_defaults(stack: Stack, admin: Admin) -> None:
    before = int(time.time())
    made = create(stack, admin.secret, name="made")
    secret = made.pop("key")
    assert re.fullmatch(r"mwt-[A-Za-z0-9_-]{43}", secret)
    assert made.pop("id") not in (admin.key_id, "")
    assert before <= epoch(made.pop("created_at")) <= time.time() + 1
    assert made == {
        "name": "made",
        "last_used_at": None,
        "permissions": DEFAULT_PERMISSIONS,
        "expires_at": None,
        "is_enabled": True,
        "rate_limit": None,
        "daily_token_budget": None,
        "allowed_models": [],
    }

    reply = chat(stack, secret)
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "Echo: Hello keys"

    reply = keys_call(stack, "GET", admin.secret)
    assert secret.encode() not in reply.body
    listed = [item for item in reply.json()["data"] if item["name"] == "made"]
    assert len(listed) == 1
    assert listed[0]["key"] == MASK
    assert listed[0]["permissions"] == DEFAULT_PERMISSIONS


def test_create_with_options_echoes_them(stack: Stack, admin: Admin) -> None:
    made = create(
        stack,
        admin.secret,
        name="limited",
        permissions=["chat.completions", "models.list", "usage.read"],
        rate_limit=7,
        daily_token_budget=5000,
        allowed_models=["echo-mini"],
        expires_in_days=3,
    )
    assert made["permissions"] == ["chat.completions", "models.list", "usage.read"]
    assert (made["rate_limit"], made["daily_token_budget"], made["allowed_models"]) == (7, 5000, ["echo-mini"])
    assert made["is_enabled"] is True
    assert epoch(made["expires_at"]) - epoch(made["created_at"]) == pytest.approx(3 * DAY, abs=2)
    assert epoch(made["expires_at"]) == pytest.approx(time.time() + 3 * DAY, abs=60)

    listed = listing(stack, admin.secret)[made["id"]]
    assert listed == {**made, "key": MASK}

    # The options take effect: only echo-mini, and models.list.
    assert chat(stack, made["key"], "echo-mini").status == 200
    assert chat(stack, made["key"], "echo-1").status == 403
    models = ok_json(request(stack.http_port, "GET", MODELS, None, bearer(made["key"])))
    assert [model["id"] for model in models["data"]] == ["echo-mini"]


def test_create_with_expires_at(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="dated", expires_at="2099-01-02T03:04:05Z")
    assert made["expires_at"] == "2099-01-02T03:04:05Z"
    assert listing(stack, admin.secret)[made["id"]]["expires_at"] == "2099-01-02T03:04:05Z"
    assert chat(stack, made["key"]).status == 200


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "name", "missing_required_parameter"),
        ({"name": "   "}, "name", "missing_required_parameter"),
        ({"name": "x" * 101}, "name", "invalid_value"),
        ({"name": "x", "permissions": ["chat.completions", "nope"]}, "permissions", "invalid_value"),
        ({"name": "x", "allowed_models": ["echo-1", "no-such-model"]}, "allowed_models", "invalid_value"),
        ({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "invalid_value"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days", "invalid_value"),
        ({"name": "x", "rate_limit": 0}, "rate_limit", "invalid_value"),
        ({"name": "x", "daily_token_budget": -5}, "daily_token_budget", "invalid_value"),
    ],
)
def test_create_validation(stack: Stack, validation_admin: Admin, body: dict[str, Any], param: str, code: str) -> None:
    reply = keys_call(stack, "POST", validation_admin.secret, body=body)
    assert_openai_error(reply, 400, code=code, param=param, kind="invalid_request_error")
    assert set(listing(stack, validation_admin.secret)) == {validation_admin.key_id}


def test_cannot_grant_a_permission_the_caller_lacks(stack: Stack) -> None:
    caller = new_admin(stack, "tester", "--permissions", "keys.manage,chat.completions")
    reply = keys_call(
        stack, "POST", caller.secret, body={"name": "x", "permissions": ["chat.completions", "usage.read"]}
    )
    assert_openai_error(reply, 403, code="insufficient_permissions", param="permissions", kind="permission_error")
    assert "usage.read" in reply.json()["error"]["message"]
    # Nor through an update of another key.
    other = create(stack, caller.secret, name="other", permissions=["chat.completions"])
    reply = keys_call(stack, "PATCH", caller.secret, f"{KEYS}/{other['id']}", {"permissions": ["usage.read"]})
    assert_openai_error(reply, 403, code="insufficient_permissions", param="permissions", kind="permission_error")
    keys = listing(stack, caller.secret)
    assert set(keys) == {caller.key_id, other["id"]}
    assert keys[other["id"]]["permissions"] == ["chat.completions"]


def test_key_limit_of_the_plan(stack: Stack) -> None:
    account = stack.create_account(f"small-{uuid.uuid4().hex[:8]}", "small")
    first_id, _ = stack.create_key("first", account)
    _, secret = stack.create_key("second", account)  # the newest, so the server reloads both on first use
    reply = keys_call(stack, "POST", secret, body={"name": "third"})
    assert_openai_error(reply, 403, code="key_limit_reached", param=None, kind="permission_error")
    message = reply.json()["error"]["message"]
    assert "small" in message and re.search(r"\ballows 2\b", message), message
    assert len(listing(stack, secret)) == 2

    assert ok_json(keys_call(stack, "DELETE", secret, f"{KEYS}/{first_id}")) == {"success": True}
    create(stack, secret, name="third")
    reply = keys_call(stack, "POST", secret, body={"name": "fourth"})
    assert_openai_error(reply, 403, code="key_limit_reached", param=None, kind="permission_error")


def test_key_limit_holds_under_concurrent_creates(stack: Stack) -> None:
    account = stack.create_account(f"small-{uuid.uuid4().hex[:8]}", "small")
    _, secret = stack.create_key("first", account)
    assert len(listing(stack, secret)) == 1  # the server knows the key before the race
    start = threading.Barrier(12)

    def attempt(n: int) -> int:
        start.wait(timeout=10)
        return keys_call(stack, "POST", secret, body={"name": f"racer-{n}"}).status

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(attempt, range(12)))
    assert len(listing(stack, secret)) == 2
    assert statuses == [200] + [403] * 11


def test_expiry_beyond_representable_dates_is_rejected(stack: Stack, admin: Admin) -> None:
    reply = keys_call(stack, "POST", admin.secret, body={"name": "forever", "expires_in_days": 3_000_000})
    assert reply.status == 400, reply.body
    assert (reply.json()["error"]["type"], reply.json()["error"]["param"]) == (
        "invalid_request_error",
        "expires_in_days",
    )
    assert set(listing(stack, admin.secret)) == {admin.key_id}


# Updating.


def test_rename(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="before")
    renamed = update(stack, admin.secret, made["id"], name="after")
    assert renamed == {**made, "key": MASK, "name": "after"}
    assert listing(stack, admin.secret)[made["id"]]["name"] == "after"
    reply = keys_call(stack, "PATCH", admin.secret, f"{KEYS}/{made['id']}", {"name": ""})
    assert_openai_error(reply, 400, code="missing_required_parameter", param="name", kind="invalid_request_error")


def test_update_by_query_id(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="query")
    reply = keys_call(stack, "PATCH", admin.secret, f"{KEYS}?id={quote(made['id'])}", {"name": "by-query"})
    assert ok_json(reply)["data"] == {**made, "key": MASK, "name": "by-query"}
    assert listing(stack, admin.secret)[made["id"]]["name"] == "by-query"


def test_disable_and_enable(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="switch")
    assert chat(stack, made["key"]).status == 200

    assert update(stack, admin.secret, made["id"], is_enabled=False)["is_enabled"] is False
    reply = chat(stack, made["key"])
    assert_openai_error(reply, 401, code="api_key_disabled", param=None, kind="authentication_error")
    assert listing(stack, admin.secret)[made["id"]]["is_enabled"] is False

    assert update(stack, admin.secret, made["id"], is_enabled=True)["is_enabled"] is True
    assert chat(stack, made["key"]).status == 200


def test_narrowed_permissions(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="narrow")
    assert update(stack, admin.secret, made["id"], permissions=["models.list"])["permissions"] == ["models.list"]
    reply = chat(stack, made["key"])
    assert_openai_error(reply, 403, code="insufficient_permissions", param=None, kind="permission_error")
    assert "chat.completions" in reply.json()["error"]["message"]
    models = ok_json(request(stack.http_port, "GET", MODELS, None, bearer(made["key"])))
    assert [model["id"] for model in models["data"]] == ["echo-1", "echo-mini", "echo-slow"]


def test_allowed_models(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="models")
    assert update(stack, admin.secret, made["id"], allowed_models=["echo-mini"])["allowed_models"] == ["echo-mini"]
    reply = chat(stack, made["key"], "echo-1")
    assert_openai_error(reply, 403, code="model_not_allowed", param="model", kind="permission_error")
    assert chat(stack, made["key"], "echo-mini").status == 200
    models = ok_json(request(stack.http_port, "GET", MODELS, None, bearer(made["key"])))
    assert [model["id"] for model in models["data"]] == ["echo-mini"]

    reply = keys_call(stack, "PATCH", admin.secret, f"{KEYS}/{made['id']}", {"allowed_models": ["no-such-model"]})
    assert_openai_error(reply, 400, code="invalid_value", param="allowed_models", kind="invalid_request_error")

    # An empty list allows every model again.
    assert update(stack, admin.secret, made["id"], allowed_models=[])["allowed_models"] == []
    assert chat(stack, made["key"], "echo-1").status == 200


def test_update_of_unknown_key_is_404(stack: Stack, admin: Admin) -> None:
    assert_unknown_key(keys_call(stack, "PATCH", admin.secret, f"{KEYS}/key_000000000000000000000000", {"name": "x"}))


# Rotating.


def test_rotate(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="rotating")
    assert chat(stack, made["key"]).status == 200

    body = ok_json(keys_call(stack, "POST", admin.secret, f"{KEYS}/{made['id']}/rotate", {}))
    assert set(body) == {"data"}
    rotated = body["data"]
    assert_key_shape(rotated)
    assert re.fullmatch(r"mwt-[A-Za-z0-9_-]{43}", rotated["key"])
    assert rotated["key"] != made["key"]
    assert (rotated["id"], rotated["name"], rotated["created_at"]) == (made["id"], "rotating", made["created_at"])

    reply = chat(stack, made["key"])
    assert_openai_error(reply, 401, code="invalid_api_key", param=None, kind="authentication_error")
    assert chat(stack, rotated["key"]).status == 200
    assert listing(stack, admin.secret)[made["id"]]["key"] == MASK


# Deleting.


def test_delete_by_query_id(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="doomed")
    assert chat(stack, made["key"]).status == 200

    reply = keys_call(stack, "DELETE", admin.secret, f"{KEYS}?id={quote(made['id'])}")
    assert ok_json(reply) == {"success": True}
    assert reply.body == b'{"success":true}'

    reply = chat(stack, made["key"])
    assert_openai_error(reply, 401, code="invalid_api_key", param=None, kind="authentication_error")
    assert made["id"] not in listing(stack, admin.secret)
    assert_unknown_key(keys_call(stack, "DELETE", admin.secret, f"{KEYS}?id={quote(made['id'])}"))


def test_delete_by_path_id(stack: Stack, admin: Admin) -> None:
    made = create(stack, admin.secret, name="doomed")
    reply = keys_call(stack, "DELETE", admin.secret, f"{KEYS}/{made['id']}")
    assert ok_json(reply) == {"success": True}
    assert reply.body == b'{"success":true}'
    assert chat(stack, made["key"]).status == 401
    assert_unknown_key(keys_call(stack, "DELETE", admin.secret, f"{KEYS}/{made['id']}"))


def test_delete_without_id_is_400(stack: Stack, admin: Admin) -> None:
    reply = keys_call(stack, "DELETE", admin.secret)
    assert_openai_error(reply, 400, code="missing_required_parameter", param="id", kind="invalid_request_error")
    assert set(listing(stack, admin.secret)) == {admin.key_id}


# Accounts see only their own keys.


def test_other_accounts_keys_are_invisible(stack: Stack) -> None:
    a, b = new_admin(stack), new_admin(stack)
    a_key = create(stack, a.secret, name="a-key")
    a_ids = set(listing(stack, a.secret))
    assert a_ids == {a.key_id, a_key["id"]}
    assert not a_ids & set(listing(stack, b.secret))

    missing = "key_000000000000000000000000"
    for method, suffix, body in (("PATCH", "", {"name": "stolen"}), ("POST", "/rotate", {}), ("DELETE", "", None)):
        theirs = keys_call(stack, method, b.secret, f"{KEYS}/{a_key['id']}{suffix}", body)
        assert_unknown_key(theirs)
        nobodys = keys_call(stack, method, b.secret, f"{KEYS}/{missing}{suffix}", body)
        assert theirs.body.replace(a_key["id"].encode(), b"ID") == nobodys.body.replace(missing.encode(), b"ID")
    assert_unknown_key(keys_call(stack, "DELETE", b.secret, f"{KEYS}?id={a_key['id']}"))

    assert chat(stack, a_key["key"]).status == 200
    listed = listing(stack, a.secret)
    assert set(listed) == a_ids
    assert listed[a_key["id"]]["name"] == "a-key"


# Credentials.


def styled(style: str, secret: str) -> tuple[str, dict[str, str]]:
    """The chat path and headers carrying `secret` in one credential style."""
    if style == "bearer":
        return CHAT, {"Authorization": f"Bearer {secret}"}
    return CHAT, {style: secret}


# ?key= is a credential on Gemini's routes only (test_gemini.py: test_key_in_query_is_gemini_only).
@pytest.mark.parametrize("style", ["bearer", "x-api-key", "x-goog-api-key"])
def test_credential_styles(stack: Stack, admin: Admin, style: str) -> None:
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "styles"}]}
    path, headers = styled(style, admin.secret)
    reply = request(stack.http_port, "POST", path, body, headers)
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: styles"
    # The same style with a wrong secret is refused.
    path, headers = styled(style, "mwt-" + "x" * 43)
    reply = request(stack.http_port, "POST", path, body, headers)
    assert_openai_error(reply, 401, code="invalid_api_key", param=None, kind="authentication_error")


def test_expired_key_is_401(stack: Stack) -> None:
    account = stack.create_account(f"expired-{uuid.uuid4().hex[:8]}")
    _, secret = stack.create_key("expired", account, "--expires-in-days", "-1")
    reply = chat(stack, secret)
    assert_openai_error(reply, 401, code="api_key_expired", param=None, kind="authentication_error")


# Native gRPC.


def metadata(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


def error_reason(error: grpc.RpcError) -> tuple[str, str]:
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info.reason, info.metadata["param"]


def test_grpc_create_list_delete(channel: grpc.Channel, stack: Stack, admin: Admin) -> None:
    keys = keys_pb2_grpc.KeysServiceStub(channel)
    auth = metadata(admin.secret)
    created = keys.CreateApiKey(
        keys_pb2.CreateApiKeyRequest(
            name="typed", permissions=["chat.completions"], expires_in_days=2, rate_limit=9, allowed_models=["echo-1"]
        ),
        metadata=auth,
        timeout=10,
    ).data
    assert re.fullmatch(r"mwt-[A-Za-z0-9_-]{43}", created.key)
    assert (created.name, list(created.permissions), list(created.allowed_models)) == (
        "typed",
        ["chat.completions"],
        ["echo-1"],
    )
    assert created.is_enabled and created.rate_limit == 9 and not created.HasField("daily_token_budget")
    assert not created.HasField("last_used_at")
    assert created.expires_at.seconds - created.created_at.seconds == pytest.approx(2 * DAY, abs=2)
    assert abs(created.created_at.seconds - time.time()) < 60
    assert chat(stack, created.key).status == 200

    listed = {key.id: key for key in keys.ListApiKeys(keys_pb2.ListApiKeysRequest(), metadata=auth, timeout=10).data}
    assert set(listed) == {admin.key_id, created.id}
    assert {key.key for key in listed.values()} == {MASK}
    assert listed[created.id].name == "typed"
    assert listed[created.id].HasField("last_used_at")

    reply = keys.DeleteApiKey(keys_pb2.DeleteApiKeyRequest(id=created.id), metadata=auth, timeout=10)
    assert reply.success is True
    listed_after = keys.ListApiKeys(keys_pb2.ListApiKeysRequest(), metadata=auth, timeout=10).data
    assert [key.id for key in listed_after] == [admin.key_id]
    assert chat(stack, created.key).status == 401
    with pytest.raises(grpc.RpcError) as caught:
        keys.DeleteApiKey(keys_pb2.DeleteApiKeyRequest(id=created.id), metadata=auth, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_grpc_other_accounts_key_is_not_found(channel: grpc.Channel, stack: Stack) -> None:
    a, b = new_admin(stack), new_admin(stack)
    keys = keys_pb2_grpc.KeysServiceStub(channel)
    attempts = [
        (keys.DeleteApiKey, keys_pb2.DeleteApiKeyRequest(id=a.key_id)),
        (keys.RotateApiKey, keys_pb2.RotateApiKeyRequest(id=a.key_id)),
        (keys.UpdateApiKey, keys_pb2.UpdateApiKeyRequest(id=a.key_id, name="stolen")),
    ]
    for method, message in attempts:
        with pytest.raises(grpc.RpcError) as caught:
            method(message, metadata=metadata(b.secret), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert error_reason(caught.value) == ("API_KEY_NOT_FOUND", "id")
    listed = keys.ListApiKeys(keys_pb2.ListApiKeysRequest(), metadata=metadata(b.secret), timeout=10).data
    assert [key.id for key in listed] == [b.key_id]
    assert chat(stack, a.secret).status == 200


def test_grpc_errors(channel: grpc.Channel, stack: Stack) -> None:
    keys = keys_pb2_grpc.KeysServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        keys.ListApiKeys(keys_pb2.ListApiKeysRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]

    plain = new_admin(stack, "tester", "--permissions", "chat.completions")
    with pytest.raises(grpc.RpcError) as caught:
        keys.ListApiKeys(keys_pb2.ListApiKeysRequest(), metadata=metadata(plain.secret), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]

    admin = new_admin(stack)
    with pytest.raises(grpc.RpcError) as caught:
        keys.CreateApiKey(keys_pb2.CreateApiKeyRequest(name=" "), metadata=metadata(admin.secret), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert error_reason(caught.value) == ("MISSING_REQUIRED_PARAMETER", "name")


def test_a_restricted_key_cannot_mint_a_looser_one(stack: Stack) -> None:
    account = stack.create_account(f"narrow-{uuid.uuid4().hex[:8]}")
    _, secret = stack.create_key(
        "narrow", account, "--models", "echo-mini", "--rate-limit", "5", "--daily-token-budget", "900"
    )
    inherited = create(stack, secret, name="child")
    assert (inherited["allowed_models"], inherited["rate_limit"], inherited["daily_token_budget"]) == (
        ["echo-mini"],
        5,
        900,
    )
    for body, param in (
        ({"name": "wide", "allowed_models": ["echo-1"]}, "allowed_models"),
        ({"name": "fast", "rate_limit": 6}, "rate_limit"),
        ({"name": "hungry", "daily_token_budget": 901}, "daily_token_budget"),
    ):
        reply = keys_call(stack, "POST", secret, body=body)
        assert_openai_error(reply, 403, code="insufficient_permissions", param=param, kind="permission_error")
    reply = keys_call(stack, "PATCH", secret, f"{KEYS}/{inherited['id']}", {"rate_limit": 50})
    assert_openai_error(reply, 403, code="insufficient_permissions", param="rate_limit", kind="permission_error")


def test_a_key_cannot_manage_a_stronger_key(stack: Stack) -> None:
    account = stack.create_account(f"takeover-{uuid.uuid4().hex[:8]}")
    owner_id, owner = stack.create_key("owner", account)
    _, helper = stack.create_key("helper", account, "--permissions", "keys.manage", "--rate-limit", "5")
    for method, path, body in (
        ("POST", f"{KEYS}/{owner_id}/rotate", {}),
        ("PATCH", f"{KEYS}/{owner_id}", {"name": "mine now"}),
        ("DELETE", f"{KEYS}?id={owner_id}", None),
    ):
        reply = keys_call(stack, method, helper, path, body)
        assert_openai_error(reply, 403, code="insufficient_permissions", param="id", kind="permission_error")
    assert chat(stack, owner).status == 200
    assert listing(stack, owner)[owner_id]["name"] == "owner"


def test_the_api_cannot_raise_a_key_above_its_plan(stack: Stack) -> None:
    account = stack.create_account(f"plan-cap-{uuid.uuid4().hex[:8]}", "small")  # 10 requests/min, 200 tokens/day
    _, owner = stack.create_key("owner", account)
    reply = keys_call(stack, "POST", owner, body={"name": "greedy", "rate_limit": 11})
    assert_openai_error(reply, 403, code="insufficient_permissions", param="rate_limit", kind="permission_error")
    reply = keys_call(stack, "POST", owner, body={"name": "greedy", "daily_token_budget": 201})
    assert_openai_error(
        reply, 403, code="insufficient_permissions", param="daily_token_budget", kind="permission_error"
    )
    assert create(stack, owner, name="modest", rate_limit=10, daily_token_budget=200)["rate_limit"] == 10


def test_new_keys_inherit_expiry_and_only_default_permissions_the_maker_has(stack: Stack) -> None:
    account = stack.create_account(f"expiry-{uuid.uuid4().hex[:8]}")
    _, maker = stack.create_key(
        "maker", account, "--expires-in-days", "1", "--permissions", "keys.manage,chat.completions"
    )
    child = create(stack, maker, name="child")
    maker_entry = next(k for k in listing(stack, maker).values() if k["name"] == "maker")
    assert child["expires_at"] == maker_entry["expires_at"] is not None
    assert child["permissions"] == ["chat.completions"]
    reply = keys_call(stack, "POST", maker, body={"name": "longer", "expires_in_days": 2})
    assert_openai_error(reply, 403, code="insufficient_permissions", param="expires_at", kind="permission_error")
