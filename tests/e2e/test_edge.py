"""Envoy, the edge: what it lets through, what it refuses (and how), what it logs; measured through the real Envoy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from modelway.config import ServerConfig
from modelway.edge import MAX_BODY_BYTES, EdgeFiles, Envoy
from modelway.v1 import chat_pb2, chat_pb2_grpc
from tests.conftest import ROOT, Stack, free_port
from tests.e2e.http import Reply, request
from tests.real.postgres import connect_db

CHAT = "/api/v1/chat/completions"
HELLO = {"model": "echo-1", "messages": [{"role": "user", "content": "hello"}]}


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


def raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Sends exact bytes (header values a client library would refuse) and reads the whole reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=lambda: _send_quietly(sock, head + b"Connection: close\r\n\r\n" + body))
        sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # Envoy answers a too-large body early, then resets the upload
        sender.join()
    head_bytes, _, payload = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return int(lines[0].split()[1]), headers, payload


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # Envoy may answer (413) and close before all is sent
        sock.sendall(data)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def assert_openai_error(status: int, headers: Any, body: bytes, expected_status: int, code: str | None = None) -> str:
    """The OpenAI error shape with an id and nothing of gRPC; returns the message."""
    assert status == expected_status, body
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert error["type"] == ("authentication_error" if status == 401 else "invalid_request_error")
    assert not [name for name in headers if name.lower().startswith(("grpc-", "x-modelway", "x-http-status"))]
    message: str = error["message"]
    for internal in ("grpc", "proto", "TYPE_", "resolve", "upstream", "transcode"):
        assert internal not in message
    return message


def reply_error(reply: Reply, status: int, code: str | None = None) -> str:
    return assert_openai_error(reply.status, reply.headers, reply.body, status, code)


# --- 1. unknown query parameters: ignored, never a silent no-op or a 503 -----


def test_unknown_query_parameters_are_ignored(stack: Stack) -> None:
    key_id, _ = stack.create_key("query-params")
    time.sleep(0.5)  # the server picks up keys the CLI made within its refresh period (0.2 s)
    renamed = request(stack.http_port, "PATCH", f"/api/v1/api-keys/{key_id}?x=1", {"name": "renamed"}, auth(stack))
    assert renamed.status == 200 and renamed.json()["data"]["name"] == "renamed"
    deleted = request(stack.http_port, "DELETE", f"/api/v1/api-keys/{key_id}?confirm=true", None, auth(stack))
    assert (deleted.status, deleted.json()) == (200, {"success": True})
    listed = request(stack.http_port, "GET", "/api/v1/api-keys?page=2", None, auth(stack)).json()["data"]
    assert key_id not in {key["id"] for key in listed}

    chat = request(stack.http_port, "POST", f"{CHAT}?a=b", HELLO, auth(stack))
    assert chat.status == 200 and chat.json()["object"] == "chat.completion"
    models = request(stack.http_port, "GET", "/api/v1/models?name=x", None, auth(stack))
    assert models.status == 200 and models.json()["object"] == "list"


def test_a_query_parameter_never_overrides_the_path_or_the_body(stack: Stack) -> None:
    """The transcoder binds a query parameter named like a field over the path: only what a route reads stays."""
    keys = {name: stack.create_key(name)[0] for name in ("target", "bystander", "by-query")}
    time.sleep(0.5)  # the server picks up keys the CLI made within its refresh period (0.2 s)

    def names() -> dict[str, str]:
        listed = request(stack.http_port, "GET", "/api/v1/api-keys", None, auth(stack)).json()["data"]
        return {key["id"]: key["name"] for key in listed}

    target, bystander = keys["target"], keys["bystander"]
    renamed = request(stack.http_port, "PATCH", f"/api/v1/api-keys/{target}?name=x&id={bystander}", {}, auth(stack))
    assert renamed.status == 200 and renamed.json()["data"]["id"] == target, renamed.body
    assert (names()[target], names()[bystander]) == ("target", "bystander")
    for query in (f"id={bystander}", f"i%64={bystander}"):
        deleted = request(stack.http_port, "DELETE", f"/api/v1/api-keys/{target}?{query}", None, auth(stack))
        assert deleted.status in (200, 404), deleted.body
        assert bystander in names() and target not in names()
    model = request(stack.http_port, "GET", "/api/v1/models/echo-1?model=echo-mini", None, auth(stack))
    assert model.status == 200 and model.json()["id"] == "echo-1"

    # What a route does read still arrives.
    usage = request(
        stack.http_port, "GET", "/api/v1/api-usage?start_date=2026-01-01&end_date=2026-01-03&x=1", None, auth(stack)
    )
    assert usage.status == 200 and [day["day"] for day in usage.json()["data"]["usage"]] == [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    by_query = keys["by-query"]
    deleted = request(stack.http_port, "DELETE", f"/api/v1/api-keys?id={by_query}&confirm=1", None, auth(stack))
    assert deleted.status == 200 and by_query not in names()


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("PUT", CHAT, "application/json"),
        ("GET", CHAT, "application/json"),
        ("POST", "/api/v1/nothing", "application/json"),
        ("DELETE", "/api/v1/models", "application/json"),
        # A gRPC path spoken as REST is not passed on untranscoded either.
        ("POST", "/modelway.v1.KeysService/DeleteApiKey", "application/json"),
        ("POST", "/modelway.v1.KeysService/DeleteApiKey", "text/plain"),
    ],
)
def test_a_request_nothing_transcodes_is_404_naming_the_url(
    stack: Stack, method: str, path: str, content_type: str
) -> None:
    reply = request(
        stack.http_port, method, f"{path}?key=sk-query-secret", b"{}", {**auth(stack), "Content-Type": content_type}
    )
    message = reply_error(reply, 404)
    assert message == f"Invalid URL ({method} {path})"  # never the query: it may hold a key


def test_grpc_content_type_over_http1_gets_a_grpc_error_and_never_reaches_the_server(stack: Stack) -> None:
    _, headers, body = raw(
        stack.http_port,
        b"POST /modelway.v1.KeysService/DeleteApiKey HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\n"
        b"Content-Length: 0\r\n",
    )
    assert (headers["grpc-status"], body) == ("3", b"")
    assert "HTTP/2" in headers["grpc-message"]
    assert "upstream" not in access_log_line(stack, headers["x-request-id"])["details"]


# --- 4. oversized input: 413 / 414 / 431, the OpenAI shape, not retryable ----


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    content = b"a" * (MAX_BODY_BYTES + 1)
    body = b'{"model":"echo-1","messages":[{"role":"user","content":"' + content + b'"}]}'
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.api_key}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    status, headers, reply = raw(stack.http_port, head.encode(), body)
    message = assert_openai_error(status, headers, reply, 413, "request_too_large")
    assert "16 MiB" in message


@pytest.mark.parametrize(
    ("what", "path", "headers", "status", "words"),
    [
        ("an Authorization header over 16 KB", CHAT, {"Authorization": "Bearer " + "k" * 17_000}, 431, "Authorization"),
        ("a 60 KB model path", "/api/v1/models/" + "m" * 60_000, {}, 414, "URL"),
        ("a 10 KB query", "/api/v1/models?q=" + "q" * 10_000, {}, 414, "URL"),
        ("40 KB of headers", CHAT, {f"X-Filler-{i}": "f" * 4000 for i in range(10)}, 431, "headers"),
        ("100 KB of headers", CHAT, {"X-Filler": "f" * 100_000}, 431, "headers"),
    ],
)
def test_oversized_url_and_headers(
    stack: Stack, what: str, path: str, headers: dict[str, str], status: int, words: str
) -> None:
    reply = request(stack.http_port, "POST" if path == CHAT else "GET", path, HELLO, {**auth(stack), **headers})
    assert words in reply_error(reply, status), what


def test_a_huge_model_name_is_a_bounded_404(stack: Stack) -> None:
    """The server's error (which names the model) never becomes a 502/503 at the edge."""
    for size in (30_000, 1_000_000):
        reply = request(stack.http_port, "POST", CHAT, {**HELLO, "model": "m" * size}, auth(stack))
        assert reply.status in (400, 404), reply.body[:300]
        assert len(reply.body) < 4096


# --- 5. header bytes: refused at the edge, never logged ----------------------


@pytest.mark.parametrize("header", [b"Authorization: Bearer ", b"X-Api-Key: ", b"X-Goog-Api-Key: "])
def test_a_credential_with_a_stray_byte_is_401_and_never_logged(stack: Stack, header: bytes) -> None:
    secret = stack.api_key.encode()
    # (Envoy's HTTP parser itself refuses control bytes, DEL included.)
    for bad in (b"\xff", b"\x80", "é".encode()):
        head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        head += header + secret + bad + b"\r\n" + f"Content-Length: {len(json.dumps(HELLO))}\r\n".encode()
        status, headers, body = raw(stack.http_port, head, json.dumps(HELLO).encode())
        message = assert_openai_error(status, headers, body, 401, "invalid_api_key")
        assert header.split(b":")[0].decode() in message and stack.api_key not in message
    time.sleep(0.5)  # access log flush
    for log in ("server.log", "envoy.log", "envoy-access.log"):
        assert secret not in (stack.workdir / log).read_bytes(), log


def test_other_header_values_must_be_visible_ascii(stack: Stack) -> None:
    head = f"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.api_key}\r\n".encode()
    status, headers, body = raw(stack.http_port, head + b"X-Title: caf\xc3\xa9\r\n")
    assert "X-Title header" in assert_openai_error(status, headers, body, 400)
    # A control byte is refused by Envoy's HTTP parser itself: a message that says so, still with an id.
    status, headers, body = raw(stack.http_port, head + b"X-Title: a\x01b\r\n")
    message = assert_openai_error(status, headers, body, 400)
    assert "not valid HTTP" in message and "JSON" not in message


def test_field_type_errors_name_the_field_and_json_errors_say_json(stack: Stack) -> None:
    wrong_type = request(stack.http_port, "POST", "/api/v1/api-keys", {"name": 5}, auth(stack))
    message = reply_error(wrong_type, 400, "invalid_type")
    assert (message, wrong_type.json()["error"]["param"]) == (
        "Invalid type for 'name': expected a string, but got a number instead.",
        "name",
    )
    broken = request(stack.http_port, "POST", "/api/v1/api-keys", b'{"name": ', auth(stack))
    assert reply_error(broken, 400).startswith("We could not parse the JSON body of your request: ")
    assert "\n" not in broken.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "code", "expected"),
    [
        # Integer fields (TYPE_INT32: the type name has digits).
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "rate_limit": "x"},
            "rate_limit",
            "invalid_type",
            "Invalid type for 'rate_limit': expected an integer, but got a string instead.",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "expires_in_days": 1.5},
            "expires_in_days",
            "invalid_value",
            "Invalid value for 'expires_in_days': expected an integer from -2147483648 to 2147483647.",
        ),
        (
            "PATCH",
            "/api/v1/api-keys/key_x",
            {"daily_token_budget": 99999999999},
            "daily_token_budget",
            "invalid_value",
            "Invalid value for 'daily_token_budget': expected an integer from -2147483648 to 2147483647.",
        ),
        (
            "PATCH",
            "/api/v1/api-keys/key_x",
            {"rate_limit": {"a": 1}},
            "rate_limit",
            "invalid_type",
            "Invalid type for 'rate_limit': expected a single value, but got an object instead.",
        ),
        # Well-known types, never by their proto name.
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "expires_at": 5},
            "expires_at",
            "invalid_type",
            "Invalid type for 'expires_at': expected an RFC 3339 timestamp string, such as \"2026-01-31T00:00:00Z\".",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "expires_at": "tomorrow"},
            "expires_at",
            "invalid_value",
            "Invalid value for 'expires_at': expected an RFC 3339 timestamp, such as \"2026-01-31T00:00:00Z\".",
        ),
        (
            "PATCH",
            "/api/v1/api-keys/key_x",
            {"permissions": "x"},
            "permissions",
            "invalid_type",
            "Invalid type for 'permissions': expected an array, but got a string instead.",
        ),
        # An array for a single value (found by the long fuzz run): the transcoder's "Proto field is not
        # repeating" never shows, and it does not name the field.
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "expires_at": []},
            None,
            "invalid_type",
            "Invalid type for a field of the body: expected a single value, but got an array instead.",
        ),
        (
            "PATCH",
            "/api/v1/api-keys/key_x",
            {"rate_limit": [1]},
            None,
            "invalid_type",
            "Invalid type for a field of the body: expected a single value, but got an array instead.",
        ),
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "": None},
            None,
            "invalid_value",
            'The request body has a field with an empty name ("").',
        ),
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "a", "allowed_models": [{}]},
            "allowed_models",
            "invalid_type",
            "Invalid type for an item of 'allowed_models': expected a single value, but got an object instead.",
        ),
    ],
)
def test_integer_and_timestamp_fields_say_what_they_expect(
    stack: Stack, method: str, path: str, body: dict[str, Any], param: str | None, code: str, expected: str
) -> None:
    reply = request(stack.http_port, method, path, body, auth(stack))
    assert reply_error(reply, 400, code) == expected
    assert reply.json()["error"]["param"] == param
    assert "googleapis" not in reply.body.decode() and "another type" not in reply.body.decode()
    assert "proto" not in reply.body.decode().lower()


# --- 12. grpc-* headers from REST callers ------------------------------------


def test_a_rest_callers_grpc_timeout_is_ignored(stack: Stack) -> None:
    slow = {"model": "echo-slow", "messages": [{"role": "user", "content": "w " * 10}]}  # ~200 ms
    reply = request(stack.http_port, "POST", CHAT, slow, {**auth(stack), "grpc-timeout": "20m", "grpc-foo": "1"})
    assert reply.status == 200 and reply.json()["object"] == "chat.completion"


# --- 6. request ids and the access log ---------------------------------------


def access_log_line(stack: Stack, request_id: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in (stack.workdir / "envoy-access.log").read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


@pytest.mark.parametrize("header", ["X-Request-Id", "X-Client-Request-Id"])
def test_a_clients_request_id_is_kept_beside_ours(stack: Stack, header: str) -> None:
    replies = [
        request(stack.http_port, "POST", f"{CHAT}?key=sk-query-secret", HELLO, {**auth(stack), header: "dup-id-1"})
        for _ in range(2)
    ]
    ids = [reply.headers["x-request-id"] for reply in replies]
    assert ids[0] != ids[1] and "dup-id-1" not in ids
    for request_id in ids:
        entry = access_log_line(stack, request_id)
        assert entry["client_request_id"] == "dup-id-1"
        assert (entry["method"], entry["path"], entry["status"]) == ("POST", CHAT, 200)
        assert entry["duration_ms"] >= 0 and entry["bytes_sent"] > 0 and entry["upstream_ms"] is not None


def test_the_access_log_clips_a_clients_request_id(stack: Stack) -> None:
    reply = request(stack.http_port, "GET", "/api/v1/models", None, {**auth(stack), "X-Request-Id": "c" * 6000})
    assert reply.status == 200
    assert access_log_line(stack, reply.headers["x-request-id"])["client_request_id"] == "c" * 128


@pytest.mark.parametrize(
    ("route", "sent", "kept"),
    [
        ("direct", [("x-request-id", "native-id-1")], "native-id-1"),
        ("direct", [("x-client-request-id", "native-id-2")], "native-id-2"),
        ("envoy", [("x-request-id", "edge-id-1")], "edge-id-1"),
        ("envoy", [], ""),  # never Envoy's own id
    ],
)
def test_a_native_callers_request_id_is_kept_beside_ours(
    stack: Stack, route: str, sent: list[tuple[str, str]], kept: str
) -> None:
    message = chat_pb2.CreateChatCompletionRequest(
        model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text="hello")]
    )
    with grpc.insecure_channel(stack.grpc_target if route == "direct" else stack.envoy_target) as channel:
        _, call = chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion.with_call(
            message, metadata=[("authorization", f"Bearer {stack.api_key}"), *sent], timeout=10
        )
    ours = dict(call.initial_metadata())["x-request-id"]
    assert ours.startswith("req_")
    with connect_db(stack.db_path) as db:  # committed before the answer went out
        rows = db.execute("SELECT client_request_id FROM usage WHERE request_id = ?", (ours,)).fetchall()
    assert rows == [(kept,)]


def test_every_reply_has_a_request_id_and_an_access_log_line(stack: Stack) -> None:
    replies = [
        request(stack.http_port, "GET", "/nowhere", None, {}),  # Envoy's own 404
        request(stack.http_port, "GET", "/api/v1/models", None, {}),  # the server's 401
        request(stack.http_port, "GET", "/api/v1/models/" + "m" * 9000, None, {}),  # the edge's 414
    ]
    status, headers, _ = raw(stack.http_port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\r\n")  # Envoy's parser
    assert status == 400
    for reply in replies:
        assert reply.headers["x-request-id"]
        assert access_log_line(stack, reply.headers["x-request-id"])["status"] == reply.status
    assert access_log_line(stack, headers["x-request-id"])["status"] == 400


def test_the_access_log_never_holds_a_credential_or_a_query(stack: Stack) -> None:
    reply = request(stack.http_port, "GET", "/api/v1/models?key=sk-query-secret", None, auth(stack))
    entry = access_log_line(stack, reply.headers["x-request-id"])
    assert entry["path"] == "/api/v1/models"
    text = (stack.workdir / "envoy-access.log").read_text()
    assert "sk-query-secret" not in text and stack.api_key not in text


# --- the admin interface and the listener ------------------------------------


def test_admin_is_a_private_unix_socket(stack: Stack) -> None:
    mode = (stack.workdir / "envoy-admin.sock").stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stack.envoy is not None and stack.envoy.admin("GET", "/ready")[0] == 200
    rendered = (stack.workdir / "envoy.yaml").read_text()
    assert "port_value: ${" not in rendered and rendered.count("socket_address") == 3  # listener, 2 clusters


def test_a_second_envoy_cannot_take_the_port(stack: Stack, tmp_path: Path) -> None:
    assert stack.envoy is not None
    other = Envoy.start(
        ServerConfig(http_port=stack.http_port, grpc_port=stack.grpc_port, ops_port=free_port()),
        EdgeFiles.in_repo(ROOT, tmp_path),
        drain_seconds=1,
        base_id=free_port(),
    )
    try:
        assert other.process.wait(timeout=20) != 0
    finally:
        other.stop()
    assert "Address already in use" in (tmp_path / "envoy.log").read_text()
    assert request(stack.http_port, "POST", CHAT, HELLO, auth(stack)).status == 200


# --- health routes: to the operations port, nothing else ---------------------


@pytest.fixture
def edge_only(tmp_path: Path) -> Iterator[tuple[ServerConfig, Envoy]]:
    """An Envoy whose gRPC server is absent and whose operations port is a scripted aiohttp server."""
    server = ServerConfig(http_port=free_port(), grpc_port=free_port(), ops_port=free_port())
    envoy = Envoy.start(server, EdgeFiles.in_repo(ROOT, tmp_path), drain_seconds=1, base_id=server.http_port)
    deadline = time.monotonic() + 30
    while not envoy.ready():
        assert time.monotonic() < deadline, (tmp_path / "envoy.log").read_text()
        time.sleep(0.05)
    try:
        yield server, envoy
    finally:
        envoy.stop()


def run_ops(port: int, stop: threading.Event) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "draining"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="modelway_requests_total 1\n")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await runner.cleanup()

    asyncio.run(main())


def test_health_routes_reach_the_operations_port_and_nothing_else_does(
    edge_only: tuple[ServerConfig, Envoy],
) -> None:
    server, _ = edge_only
    stop = threading.Event()
    thread = threading.Thread(target=run_ops, args=(server.ops_port, stop))
    thread.start()
    try:
        time.sleep(0.5)
        healthz = request(server.http_port, "GET", "/healthz")
        assert (healthz.status, healthz.json()) == (200, {"status": "ok"})
        readyz = request(server.http_port, "GET", "/readyz?verbose=1")
        assert (readyz.status, readyz.json()) == (503, {"status": "draining"})
        assert request(server.http_port, "GET", "/metrics").status == 404
        for method in ("POST", "HEAD", "DELETE"):
            wrong = request(server.http_port, method, "/healthz")
            assert wrong.status == 404 and "status" not in (wrong.json() if method != "HEAD" else {}), wrong.body
        assert reply_error(request(server.http_port, "POST", "/readyz"), 404) == "Invalid URL (POST /readyz)"
    finally:
        stop.set()
        thread.join()
    down = request(server.http_port, "GET", "/readyz")
    assert down.status == 503 and down.json()["status"] == "unavailable"


def test_no_server_behind_envoy_is_a_clear_503(edge_only: tuple[ServerConfig, Envoy]) -> None:
    server, _ = edge_only
    reply = request(server.http_port, "POST", CHAT, HELLO, {"Authorization": "Bearer x"})
    assert reply.status == 503 and reply.headers["x-request-id"]
    error = reply.json()["error"]
    assert error["type"] == "api_error" and "retry" in error["message"] and "upstream" not in error["message"]
