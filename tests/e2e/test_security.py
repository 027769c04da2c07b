"""Security: no key in clear at rest or in any log, accounts cannot reach each other's keys, a revoked
key fails on its very next call, and no error echoes a submitted key or an upstream secret."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import pytest

from modelway.v1 import chat_pb2, chat_pb2_grpc, keys_pb2, keys_pb2_grpc
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import Reply, request
from tests.fakes.server import FakeUpstream, Json, Received
from tests.fakes.server import Reply as FakeReply
from tests.real.postgres import PgDatabase, connect_db, store_files

CHAT = "/api/v1/chat/completions"
KEYS = "/api/v1/api-keys"
UPSTREAM_SECRET = "sk-upstream-" + uuid.uuid4().hex

LEAKY = """
[routing]
retries = 0

[[providers]]
name = "leaky"
kind = "openai"
base_url = "{base}/v1"
api_key_env = "MODELWAY_TEST_LEAKY_KEY"

[[models]]
id = "leaky-1"
provider = "leaky"
"""


def echo_the_key(received: Received) -> FakeReply:
    """An upstream that rejects the gateway's credential and quotes it back, as some do."""
    sent = received.headers.get("authorization", "")
    message = f"Incorrect API key provided: {sent}. You can find your API key at https://example.invalid."
    return Json({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}, 401)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upstream = FakeUpstream(echo_the_key).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODELWAY_TEST_LEAKY_KEY", UPSTREAM_SECRET)
            config = TEST_CONFIG + LEAKY.format(base=upstream.base_url)
            with running_stack(tmp_path_factory.mktemp("security"), config) as stack:
                yield stack
    finally:
        upstream.stop()


@dataclass(frozen=True)
class Owner:
    account: str
    key_id: str
    secret: str


def owner(stack: Stack) -> Owner:
    account = stack.create_account(f"sec-{uuid.uuid4().hex[:8]}")
    key_id, secret = stack.create_key("owner", account)
    return Owner(account, key_id, secret)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def chat(stack: Stack, secret: str, model: str = "echo-1", **extra: Any) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello security"}], **extra}
    return request(stack.http_port, "POST", CHAT, body, bearer(secret))


def keys_call(stack: Stack, method: str, secret: str, path: str = KEYS, body: dict[str, Any] | None = None) -> Reply:
    return request(stack.http_port, method, path, body, bearer(secret))


def native_chat(stack: Stack, secret: str, target: str | None = None) -> grpc.StatusCode:
    request_ = chat_pb2.CreateChatCompletionRequest(
        model="echo-1", messages=[chat_pb2.ChatMessage(role="user", text="Hello native")]
    )
    with grpc.insecure_channel(target or stack.grpc_target) as channel:
        try:
            chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
                request_, metadata=[("authorization", f"Bearer {secret}")], timeout=10
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def raw_post(stack: Stack, path: str, headers: list[tuple[str, bytes]], body: bytes) -> tuple[int, bytes, bytes]:
    """A request whose header bytes are sent exactly as given (http.client would refuse some as text)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in [("Content-Type", b"application/json"), ("Content-Length", str(len(body)).encode())]:
            connection.putheader(name, value)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, str(response.headers).encode(), response.read()
    finally:
        connection.close()


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    """An HPACK integer whose first byte has `prefix_bits` bits for it (RFC 7541, 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = bytearray([limit]), value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def raw_grpc_call(port: int, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """One gRPC call over HTTP/2 with header bytes sent exactly as given (no gRPC client sends a non-UTF-8
    value): literal HPACK fields, no Huffman coding, an empty request message. Returns what came back."""
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"x")]
    fields += [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers]
    block = b"".join(b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v for n, v in fields)
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")  # preface, empty SETTINGS
    data += _frame(1, 0x4, 1, block) + _frame(0, 0x1, 1, b"\x00" * 5)  # HEADERS, then DATA ending the stream
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        # Until the server ends stream 1 (a frame on it with END_STREAM) or closes.
        while chunk := sock.recv(65536):
            received += chunk
            view, ended = received, False
            while len(view) >= 9:
                length = int.from_bytes(view[:3], "big")
                kind, flags, stream = view[3], view[4], int.from_bytes(view[5:9], "big") & 0x7FFFFFFF
                ended = ended or (stream == 1 and kind in (0, 1) and flags & 0x1 == 1)
                view = view[9 + length :]
            if ended:
                break
    return received


def committed(stack: Stack, request_ids: list[str]) -> None:
    """Waits until these calls' usage rows are in the table."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with connect_db(stack.db_path) as connection:
            marks = ",".join("?" * len(request_ids))
            (count,) = connection.execute(
                f"SELECT COUNT(*) FROM usage WHERE request_id IN ({marks})", request_ids
            ).fetchone()
        if count == len(request_ids):
            return
        time.sleep(0.05)
    raise AssertionError("usage rows not committed")


def assert_not_echoed(secret: str, *texts: bytes) -> None:
    for text in texts:
        assert secret.encode() not in text
        # Nor the random part alone (a prefix-stripped or re-quoted echo).
        assert secret[4:].encode() not in text


def test_no_key_in_clear_in_the_store_or_any_log(stack: Stack) -> None:
    made = keys_call(stack, "POST", stack.api_key, body={"name": "made-over-rest"})
    assert made.status == 200, made.body
    created = made.json()["data"]
    rotated = keys_call(stack, "POST", stack.api_key, f"{KEYS}/{created['id']}/rotate", {})
    assert rotated.status == 200, rotated.body
    secrets = [stack.api_key, created["key"], rotated.json()["data"]["key"]]
    live = [stack.api_key, secrets[2]]

    ids: list[str] = []
    body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for secret in live:
        for reply in (
            chat(stack, secret),
            chat(stack, secret, stream=True),
            chat(stack, secret, model="no-such-model"),  # fails after the key was read
            chat(stack, secret, temperature="hot"),  # a bad body, key in hand
            chat(stack, secret + "x"),  # one character off
            request(stack.http_port, "POST", f"{CHAT}?key={quote(secret)}", body),
            request(stack.http_port, "POST", CHAT, body, {"x-api-key": secret}),
        ):
            ids.append(reply.headers["x-request-id"])
            assert_not_echoed(secret, reply.body, str(reply.headers).encode())
        # A trailing byte that is not valid UTF-8 (grpcio logs such headers when it cannot decode them).
        status, headers, answer = raw_post(
            stack, CHAT, [("Authorization", b"Bearer " + secret.encode() + b"\xff")], body
        )
        assert status in (400, 401), answer
        assert_not_echoed(secret, headers, answer)
        assert native_chat(stack, secret) == grpc.StatusCode.OK
        assert native_chat(stack, secret, stack.envoy_target) == grpc.StatusCode.OK
        assert native_chat(stack, secret + "x") == grpc.StatusCode.UNAUTHENTICATED
    assert chat(stack, secrets[1]).status == 401  # the secret rotated away
    committed(stack, ids)
    time.sleep(0.3)  # lets the server and Envoy write what they log of these calls

    files = [stack.workdir / "server.log", stack.workdir / "envoy.log"]
    files += [path for path in stack.workdir.glob("*.log") if path not in files]  # any access log too
    searched = store_files(stack.db_path, stack.workdir)
    searched += [(path.name, path.read_bytes()) for path in files if path.exists()]
    for name, data in searched:
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:8]}... found in {name}"
            assert secret[4:].encode() not in data, f"{secret[:8]}... (without prefix) found in {name}"
    # The database (with SQLite: its file and WAL) and both logs at least.
    assert len(searched) >= (3 if isinstance(stack.db_path, PgDatabase) else 4)


def test_a_key_with_a_stray_byte_on_the_native_port_never_reaches_the_log(stack: Stack) -> None:
    """Straight to the gRPC port (no Envoy to refuse it): grpcio logs the whole header value it cannot
    decode. Wherever the bad byte sits, in whichever credential header, nothing of the key is logged."""
    log = stack.workdir / "server.log"
    secret = owner(stack).secret
    start = log.stat().st_size
    for name, prefix in ((b"authorization", b"Bearer "), (b"x-api-key", b""), (b"x-goog-api-key", b"")):
        for cut in (2, 8, 20, len(secret)):
            value = prefix + secret[:cut].encode() + b"\xff" + secret[cut:].encode()
            reply = raw_grpc_call(stack.grpc_port, "/modelway.v1.ModelsService/ListModels", [(name, value)])
            assert reply  # the server answered (it refuses the call)
    time.sleep(0.5)  # the server writes what it logs of these calls
    written = log.read_bytes()[start:]
    assert b"Invalid encoding" in written  # grpcio did log the header: the scrubber is what was tested
    for part in (secret, secret[4:], secret[:20], secret[8:], secret[20:], secret[-16:]):
        assert part.encode() not in written, part


def test_accounts_cannot_reach_each_others_keys(stack: Stack) -> None:
    a, b = owner(stack), owner(stack)
    nobody = "key_" + "0" * 24

    def attempts(key_id: str) -> list[Reply]:
        return [
            keys_call(stack, "PATCH", b.secret, f"{KEYS}/{key_id}", {"name": "stolen", "is_enabled": False}),
            keys_call(stack, "PATCH", b.secret, f"{KEYS}?id={key_id}", {"name": "stolen"}),
            keys_call(stack, "POST", b.secret, f"{KEYS}/{key_id}/rotate", {}),
            keys_call(stack, "DELETE", b.secret, f"{KEYS}/{key_id}"),
            keys_call(stack, "DELETE", b.secret, f"{KEYS}?id={key_id}"),
        ]

    for theirs, missing in zip(attempts(a.key_id), attempts(nobody), strict=True):
        # Exactly what a key that does not exist gets: 404, and not a word more.
        assert theirs.status == 404, theirs.body
        assert theirs.json()["error"]["code"] == "api_key_not_found"
        assert theirs.body.replace(a.key_id.encode(), b"ID") == missing.body.replace(nobody.encode(), b"ID")

    keys = [("authorization", f"Bearer {b.secret}")]
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = keys_pb2_grpc.KeysServiceStub(channel)
        for method, message in (
            (stub.UpdateApiKey, keys_pb2.UpdateApiKeyRequest(id=a.key_id, name="stolen")),
            (stub.RotateApiKey, keys_pb2.RotateApiKeyRequest(id=a.key_id)),
            (stub.DeleteApiKey, keys_pb2.DeleteApiKeyRequest(id=a.key_id)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                method(message, metadata=keys, timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        listed = stub.ListApiKeys(keys_pb2.ListApiKeysRequest(), metadata=keys, timeout=10).data
        assert [key.id for key in listed] == [b.key_id]

    # A's key is untouched: same secret, same name, still enabled; its usage is not B's.
    assert chat(stack, a.secret).status == 200
    mine = keys_call(stack, "GET", a.secret).json()["data"]
    assert [(k["id"], k["name"], k["is_enabled"]) for k in mine] == [(a.key_id, "owner", True)]
    usage = keys_call(stack, "GET", b.secret, "/api/v1/api-usage").json()["data"]
    assert usage["summary"]["total_requests"] == 0


def test_revoked_disabled_and_rotated_keys_fail_on_the_very_next_call(stack: Stack) -> None:
    admin = owner(stack)
    for change in ("delete", "disable", "rotate"):
        made = keys_call(stack, "POST", admin.secret, body={"name": change}).json()["data"]
        secret = made["key"]
        assert chat(stack, secret).status == 200
        assert native_chat(stack, secret) == grpc.StatusCode.OK
        if change == "delete":
            assert keys_call(stack, "DELETE", admin.secret, f"{KEYS}/{made['id']}").status == 200
        elif change == "disable":
            assert keys_call(stack, "PATCH", admin.secret, f"{KEYS}/{made['id']}", {"is_enabled": False}).status == 200
        else:
            assert keys_call(stack, "POST", admin.secret, f"{KEYS}/{made['id']}/rotate", {}).status == 200
        reply = chat(stack, secret)
        assert reply.status == 401, (change, reply.body)
        assert native_chat(stack, secret) == grpc.StatusCode.UNAUTHENTICATED, change
        assert native_chat(stack, secret, stack.envoy_target) == grpc.StatusCode.UNAUTHENTICATED, change
        assert_not_echoed(secret, reply.body)


def test_an_upstream_secret_is_never_echoed(stack: Stack) -> None:
    for stream in (False, True):
        reply = chat(stack, stack.api_key, model="leaky-1", stream=stream)
        assert reply.status == 502, reply.body
        assert UPSTREAM_SECRET.encode() not in reply.body
        assert UPSTREAM_SECRET.encode() not in str(reply.headers).encode()
        assert b"Incorrect API key provided" not in reply.body  # the upstream's words stay upstream
    request_ = chat_pb2.CreateChatCompletionRequest(
        model="leaky-1", messages=[chat_pb2.ChatMessage(role="user", text="Hello")]
    )
    with grpc.insecure_channel(stack.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
            request_, metadata=[("authorization", f"Bearer {stack.api_key}")], timeout=10
        )
    error = caught.value
    assert UPSTREAM_SECRET not in (error.details() or "")  # type: ignore[attr-defined]
    assert all(UPSTREAM_SECRET.encode() not in bytes(str(value), "utf-8") for _, value in error.trailing_metadata())  # type: ignore[attr-defined]
    time.sleep(0.3)
    for name in ("server.log", "envoy.log"):
        assert UPSTREAM_SECRET.encode() not in (stack.workdir / name).read_bytes()
