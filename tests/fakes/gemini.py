"""A fake Google Gemini API: documented-shape generateContent answers and SSE streams, and a default handler."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tests.fakes.server import FakeUpstream, Json, Received, Reply, Sse

__all__ = [
    "MODELS",
    "candidate",
    "chat_json",
    "chat_stream",
    "default",
    "error_json",
    "function_call",
    "models_json",
    "sse_frame",
    "start",
    "usage_metadata",
]

MODELS = ("gemini-2.5-flash", "gemini-2.5-pro")
MODEL_VERSION = "gemini-2.5-flash"
RESPONSE_ID = "fake-gemini-response-1"
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)


def function_call(name: str, args: Mapping[str, Any] | None = None, *, id: str = "") -> dict[str, Any]:
    """A functionCall part; the Gemini API leaves `id` out, Vertex and newer models set it."""
    call: dict[str, Any] = {"name": name, "args": dict(args or {})}
    if id:
        call["id"] = id
    return {"functionCall": call}


def candidate(
    text: str = "",
    *,
    function_calls: Sequence[Mapping[str, Any]] = (),
    finish_reason: str | None = "STOP",
    index: int = 0,
) -> dict[str, Any]:
    """One Candidate: text and functionCall parts in a "model" Content, and its finishReason when given."""
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.extend(dict(call) for call in function_calls)
    result: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish_reason is not None:
        result["finishReason"] = finish_reason
    return result


def usage_metadata(
    prompt_tokens: int, completion_tokens: int | None = None, thoughts_tokens: int = 0
) -> dict[str, Any]:
    """usageMetadata; candidatesTokenCount is absent until the answer is done, as in real streams."""
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
    total = prompt_tokens
    if completion_tokens is not None:
        usage["candidatesTokenCount"] = completion_tokens
        total += completion_tokens
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
        total += thoughts_tokens
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    return usage


def chat_json(
    text: str = "",
    *,
    function_calls: Sequence[Mapping[str, Any]] = (),
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    model_version: str = MODEL_VERSION,
    response_id: str = RESPONSE_ID,
) -> dict[str, Any]:
    """A whole GenerateContentResponse; `candidates` overrides the single one built from the other arguments."""
    built = (
        [dict(c) for c in candidates]
        if candidates is not None
        else [candidate(text, function_calls=function_calls, finish_reason=finish_reason)]
    )
    return {
        "candidates": built,
        "usageMetadata": usage_metadata(prompt_tokens, completion_tokens),
        "modelVersion": model_version,
        "responseId": response_id,
    }


def sse_frame(payload: Mapping[str, Any]) -> bytes:
    """One event as Google frames it: a single data line, CRLF line ends."""
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def chat_stream(
    pieces: Sequence[str],
    *,
    function_calls: Sequence[Mapping[str, Any]] = (),
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
    model_version: str = MODEL_VERSION,
    response_id: str = RESPONSE_ID,
) -> list[bytes]:
    """streamGenerateContent?alt=sse frames: one chunk per text piece, then the function calls whole in one
    chunk; the last chunk carries finishReason and the full usageMetadata."""
    completion = len(pieces) + len(function_calls) if completion_tokens is None else completion_tokens
    chunks: list[dict[str, Any]] = [candidate(piece, finish_reason=None) for piece in pieces]
    if function_calls or not chunks:
        chunks.append(candidate(function_calls=function_calls, finish_reason=None))
    chunks[-1]["finishReason"] = finish_reason
    frames = []
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        payload = {
            "candidates": [chunk],
            "usageMetadata": usage_metadata(prompt_tokens, completion if last else None),
            "modelVersion": model_version,
            "responseId": response_id,
        }
        frames.append(sse_frame(payload))
    return frames


def error_json(code: int, message: str, status: str, details: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A google.rpc.Status error body."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = [dict(item) for item in details]
    return {"error": error}


def models_json() -> dict[str, Any]:
    """GET /v1beta/models."""
    return {
        "models": [
            {
                "name": f"models/{name}",
                "version": "001",
                "displayName": name,
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            for name in MODELS
        ]
    }


def _last_user_turn(body: Mapping[str, Any]) -> Mapping[str, Any]:
    for content in reversed(body.get("contents") or []):
        if content.get("role") == "user":
            return dict(content)
    return {}


def _count_words(body: Mapping[str, Any]) -> int:
    texts = [part.get("text", "") for content in body.get("contents") or [] for part in content.get("parts") or []]
    texts += [part.get("text", "") for part in (body.get("systemInstruction") or {}).get("parts") or []]
    return max(1, sum(len(text.split()) for text in texts))


def default(received: Received) -> Reply:
    """Answers like Gemini: "Echo: <last user text>", or a call of the first tool when asked for a tool."""
    if received.method == "GET" and received.path.rstrip("/").endswith("/models"):
        return Json(models_json())
    streaming = received.path.endswith(":streamGenerateContent")
    if received.method != "POST" or not (streaming or received.path.endswith(":generateContent")):
        return Json(error_json(404, f"Method not found: {received.path}", "NOT_FOUND"), status=404)
    try:
        body = received.json
    except orjson.JSONDecodeError:
        return Json(error_json(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"), status=400)
    turn = _last_user_turn(body)
    parts = turn.get("parts") or []
    text = "".join(str(part.get("text", "")) for part in parts)
    answered_tool = any("functionResponse" in part for part in parts)
    declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
    prompt_tokens = _count_words(body)
    # Real response ids differ per answer, and so do the call ids derived from them.
    response_id = hashlib.sha256(received.body).hexdigest()[:20]
    if declarations and mode != "NONE" and not answered_tool and (mode == "ANY" or _TOOL_WORD.search(text)):
        calls = [function_call(str(declarations[0]["name"]), {})]
        if streaming:
            return Sse(chat_stream([], function_calls=calls, prompt_tokens=prompt_tokens, response_id=response_id))
        return Json(
            chat_json(function_calls=calls, prompt_tokens=prompt_tokens, completion_tokens=1, response_id=response_id)
        )
    reply = f"Echo: {text or '(no user message)'}"
    pieces = re.findall(r"\S+\s*", reply)
    if streaming:
        return Sse(chat_stream(pieces, prompt_tokens=prompt_tokens, response_id=response_id))
    return Json(chat_json(reply, prompt_tokens=prompt_tokens, completion_tokens=len(pieces), response_id=response_id))


def start() -> FakeUpstream:
    return FakeUpstream(default).start()
