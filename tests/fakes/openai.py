"""A fake OpenAI Chat Completions upstream: documented-shape payload builders and a default handler."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from modelway.core.types import ToolCall
from tests.fakes.server import FakeUpstream, Json, Received, Reply, Sse

__all__ = [
    "CREATED",
    "FINGERPRINT",
    "MODELS",
    "chat_chunk",
    "chat_json",
    "chat_stream",
    "default",
    "error_json",
    "models_json",
    "sse_bytes",
    "start",
    "usage_json",
]

CREATED = 1727389200
FINGERPRINT = "fp_44709d6fcb"
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini")
_ARGUMENT_CHUNK = 8
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A `usage` object with the detail fields OpenAI sends along."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_json(
    text: str | None = "Hello!",
    *,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = (10, 3),
    model: str = "gpt-4o-mini",
    n: int = 1,
    completion_id: str = "chatcmpl-fake",
) -> dict[str, Any]:
    """A `chat.completion` object; every one of the `n` choices carries the same message.

    `finish_reason` defaults to "tool_calls" when there are tool calls, else "stop".
    """
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in tool_calls
        ]
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    answer: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {"index": index, "message": message, "logprobs": None, "finish_reason": reason} for index in range(n)
        ],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if usage is not None:
        answer["usage"] = usage_json(*usage)
    return answer


def chat_chunk(
    choices: Sequence[dict[str, Any]],
    *,
    usage: dict[str, Any] | None = None,
    include_usage: bool = True,
    model: str = "gpt-4o-mini",
    completion_id: str = "chatcmpl-fake",
) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `include_usage` every chunk has a `usage` key, null but on the last."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": list(choices),
    }
    if include_usage:
        chunk["usage"] = usage
    return chunk


def chat_stream(
    pieces: Sequence[str] = ("Hello", "!"),
    *,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = (10, 3),
    include_usage: bool = True,
    done: bool = True,
    model: str = "gpt-4o-mini",
    n: int = 1,
    argument_chunk: int = _ARGUMENT_CHUNK,
) -> list[str]:
    """An answer streamed as OpenAI streams it: each item is one event's `data`.

    `Sse` frames each as `data: item\\n\\n`, exactly OpenAI's framing; `sse_bytes`
    gives the raw stream. A role-only opener, the text pieces, then each tool
    call (id, name and empty arguments first, then argument fragments of
    `argument_chunk` characters), a finish chunk, the usage chunk (when
    `include_usage` and `usage`) and `[DONE]` (when `done`). Choices of `n`
    interleave piece by piece.
    """

    def chunk(choices: list[dict[str, Any]], chunk_usage: dict[str, Any] | None = None) -> str:
        return orjson.dumps(chat_chunk(choices, usage=chunk_usage, include_usage=include_usage, model=model)).decode()

    def choice(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    opener: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if tool_calls and not pieces:
        opener["content"] = None
    deltas: list[dict[str, Any]] = [opener]
    deltas += [{"content": piece} for piece in pieces]
    for position, call in enumerate(tool_calls):
        first = {"index": position, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [first]})
        for start in range(0, len(call.arguments), argument_chunk):
            fragment = call.arguments[start : start + argument_chunk]
            deltas.append({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    events = [chunk([choice(index, delta)]) for delta in deltas for index in range(n)]
    events += [chunk([choice(index, {}, reason)]) for index in range(n)]
    if include_usage and usage is not None:
        events.append(chunk([], usage_json(*usage)))
    if done:
        events.append("[DONE]")
    return events


def sse_bytes(events: Sequence[str]) -> bytes:
    """Event data as the raw bytes of an OpenAI event stream."""
    return b"".join(f"data: {data}\n\n".encode() for data in events)


def error_json(
    message: str, type: str = "invalid_request_error", *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body (also what it sends as a `data:` event when a stream fails)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def models_json(models: Sequence[str] = MODELS) -> dict[str, Any]:
    """The answer to GET /v1/models."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": CREATED, "owned_by": "openai"} for model in models],
    }


# A 1x1 PNG: the smallest real image an images answer can carry.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def images_json(prompt: str, *, n: int = 1, response_format: str = "url") -> dict[str, Any]:
    """An Images API answer as OpenAI documents it: `created` and one `data` item per image."""
    item: dict[str, Any] = (
        {"b64_json": PNG_B64} if response_format == "b64_json" else {"url": "https://images.example/img-1.png"}
    )
    return {"created": CREATED, "data": [{**item, "revised_prompt": f"A picture of {prompt}"} for _ in range(n)]}


def default(received: Received) -> Reply:
    """Answers like OpenAI: "Echo: <last user text>", or a call of the first tool when the text says "tool"."""
    if received.method == "GET" and received.path.rstrip("/").endswith("/models"):
        return Json(models_json())
    if received.method == "POST" and received.path.rstrip("/").endswith("/images/generations"):
        body = received.json
        return Json(
            images_json(body["prompt"], n=body.get("n") or 1, response_format=body.get("response_format", "url"))
        )
    if received.method != "POST" or not received.path.rstrip("/").endswith("/chat/completions"):
        return Json(error_json(f"Invalid URL ({received.method} {received.path})"), status=404)
    try:
        body = received.json
    except orjson.JSONDecodeError:
        return Json(error_json("We could not parse the JSON body of your request."), status=400)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" not in body:
        return Json(error_json("'messages' and 'model' are required.", param="messages"), status=400)
    model = str(body["model"])
    n = body.get("n") or 1
    messages = body["messages"]
    user_text = _last_user_text(messages)
    prompt_tokens = sum(len(_message_text(message).split()) + 4 for message in messages)
    call = _tool_call(body, user_text)
    if call is not None:
        pieces: list[str] = []
        completion_tokens = 1 + len(call.arguments)
    else:
        pieces = re.findall(r"\S+\s*", f"Echo: {user_text}")
        completion_tokens = len(pieces)
    calls = (call,) if call is not None else ()
    usage = (prompt_tokens, completion_tokens * n)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = chat_stream(pieces, tool_calls=calls, usage=usage, include_usage=include_usage, model=model, n=n)
        return Sse(events)
    return Json(chat_json("".join(pieces) if call is None else None, tool_calls=calls, usage=usage, model=model, n=n))


def start() -> FakeUpstream:
    """A running fake OpenAI upstream; its base URL for an Upstream is `fake.base_url + "/v1"`."""
    return FakeUpstream(default).start()


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return ""


def _tool_call(body: dict[str, Any], user_text: str) -> ToolCall | None:
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, dict)]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    names = [str((tool.get("function") or {}).get("name", "")) for tool in tools]
    if isinstance(choice, dict):
        name = str((choice.get("function") or {}).get("name", ""))
    elif choice == "required" or _TOOL_WORD.search(user_text):
        name = names[0]
    else:
        return None
    return ToolCall(id=f"call_fake{names.index(name) if name in names else 0}", name=name, arguments="{}")
