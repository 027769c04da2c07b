"""A raw HTTP/1.1 client for asserting exact statuses, headers and bytes."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    if isinstance(body, dict):
        body = json.dumps(body)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def read_slow_stream(port: int, key: str, words: int, into: list[bytes], started: threading.Event) -> None:
    """A slow SSE chat stream through Envoy (echo-slow: 20 ms a word): sets `started` at its first
    bytes, then appends to `into` all it received, whole or cut."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "echo-slow", "stream": True, "messages": [{"role": "user", "content": "w " * words}]}
    connection.request("POST", "/api/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    received = response.read1(65536)
    started.set()
    try:
        while chunk := response.read1(65536):
            received += chunk
    except (http.client.IncompleteRead, ConnectionError):
        pass
    into.append(received)
    connection.close()
