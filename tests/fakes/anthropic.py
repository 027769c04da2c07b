"""A fake Anthropic Messages API: documented-shape JSON answers, SSE streams, errors, and a default handler."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from modelway.core.types import ToolCall
from tests.fakes.server import FakeUpstream, Json, Received, Reply, Sse

__all__ = [
    "chat_json",
    "chat_stream",
    "default",
    "error_event",
    "error_json",
    "frame",
    "start",
]

MODEL = "claude-sonnet-4-5"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)
# Tool input streams in fragments this long, as Anthropic sends partial JSON.
_ARGUMENT_CHUNK = 8


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": orjson.loads(call.arguments or "{}")}


def chat_json(
    text: str = "",
    tool_calls: Sequence[ToolCall] = (),
    *,
    stop_reason: str | None = None,
    input_tokens: int = 10,
    output_tokens: int = 5,
    model: str = MODEL,
) -> dict[str, Any]:
    """A non-streamed Messages API answer; stop_reason defaults to tool_use with calls, else end_turn."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    content.extend(_tool_use_block(call) for call in tool_calls)
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_calls else "end_turn"),
        "stop_sequence": None,
        "usage": _usage(input_tokens, output_tokens),
    }


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame as Anthropic writes it: the event name line, then one data line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def chat_stream(
    pieces: Sequence[str] = (),
    tool_calls: Sequence[ToolCall] = (),
    *,
    stop_reason: str | None = None,
    input_tokens: int = 10,
    output_tokens: int = 5,
    model: str = MODEL,
    argument_chunk: int = _ARGUMENT_CHUNK,
) -> list[str | bytes]:
    """The full event stream of one answer: text pieces in one text block, then one tool_use block per call."""
    message: dict[str, Any] = {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(input_tokens, 1),
    }
    frames: list[str | bytes] = [
        frame("message_start", {"type": "message_start", "message": message}),
        frame("ping", {"type": "ping"}),
    ]
    index = 0
    if pieces:
        frames.append(
            frame(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
        )
        for piece in pieces:
            frames.append(
                frame(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                )
            )
        frames.append(frame("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for call in tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        frames.append(
            frame("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        # Anthropic opens every tool input with an empty fragment.
        fragments = [
            "",
            *(call.arguments[i : i + argument_chunk] for i in range(0, len(call.arguments), argument_chunk)),
        ]
        for fragment in fragments:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            frames.append(frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        frames.append(frame("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    frames.append(
        frame(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason or ("tool_use" if tool_calls else "end_turn"),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    frames.append(frame("message_stop", {"type": "message_stop"}))
    return frames


def error_json(kind: str = "invalid_request_error", message: str = "Invalid request") -> dict[str, Any]:
    """An error body as Anthropic sends it with an error status."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def error_event(kind: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An error event inside a stream."""
    return frame("error", {"type": "error", "error": {"type": kind, "message": message}})


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [block.get("text", "") for block in content or [] if block.get("type") == "text"]
        if texts:
            return "".join(texts)
    return ""


def _count(text: str) -> int:
    return max(1, len(text.split()))


def default(received: Received) -> Reply:
    """Answers any Messages API request: "Echo: <last user text>", or a call of the first tool when asked."""
    if received.path != "/v1/messages":
        return Json(error_json("not_found_error", f"Not found: {received.path}"), status=404)
    try:
        body = received.json
    except orjson.JSONDecodeError:
        return Json(error_json("invalid_request_error", "The request body is not valid JSON"), status=400)
    if not isinstance(body, dict) or not body.get("messages") or "max_tokens" not in body:
        return Json(error_json("invalid_request_error", "messages and max_tokens are required"), status=400)
    user_text = _last_user_text(body)
    prompt = orjson.dumps([body.get("system", ""), body["messages"]]).decode()
    input_tokens = _count(prompt)
    tools = body.get("tools") or []
    tool_choice = (body.get("tool_choice") or {}).get("type", "auto")
    if tools and tool_choice != "none" and (_TOOL_WORD.search(user_text) or tool_choice in ("any", "tool")):
        name = body["tool_choice"].get("name") if tool_choice == "tool" else tools[0]["name"]
        call = ToolCall(id="toolu_01A09q90qw90lq917835lq9", name=name, arguments="{}")
        if body.get("stream"):
            return Sse(chat_stream(tool_calls=[call], input_tokens=input_tokens, output_tokens=3))
        return Json(chat_json(tool_calls=[call], input_tokens=input_tokens, output_tokens=3))
    text = f"Echo: {user_text}"
    words = text.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])]
    if body.get("stream"):
        return Sse(chat_stream(pieces, input_tokens=input_tokens, output_tokens=len(pieces)))
    return Json(chat_json(text, input_tokens=input_tokens, output_tokens=len(pieces)))


def start() -> FakeUpstream:
    """A started fake Anthropic upstream answering with `default` unless a test scripts replies."""
    return FakeUpstream(default).start()
