"""A network-free provider that streams a deterministic echo of the request."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from modelway.core.tokens import count_message_tokens, count_tokens, split_tokens
from modelway.core.types import (
    ChatRequest,
    ChoiceDelta,
    FinishReason,
    FunctionTool,
    GeneratedImage,
    ImagePart,
    ImageRequest,
    StreamEvent,
    ToolCallDelta,
    Usage,
)
from modelway.errors import GatewayError, Reason
from modelway.providers.echo_images import render_png
from modelway.providers.json_schema import instance_of

__all__ = ["EchoProvider"]

# What the echo provider draws when the caller named no size (OpenAI's default).
_IMAGE_SIZE = "1024x1024"

# Arguments stream in slices this long, as real models send them in fragments.
_ARGUMENT_CHUNK = 8
# At most this many deltas per call over all choices: beyond it, pieces are
# sent several tokens at a time, so n=128 with a long prompt stays cheap.
_MAX_DELTAS = 4096
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Choice:
    """One choice worked out in full before streaming: its deltas and cost."""

    deltas: tuple[ChoiceDelta, ...]
    completion_tokens: int


class EchoProvider:
    """Answers "Echo: <last user text>", or calls a tool, without any network.

    Every choice gets the same output, worked out once. Deltas of the choices
    are interleaved position by position (choice 0's first piece, choice 1's
    first piece, ...), and each choice ends with a delta carrying only its
    finish_reason. A delta holds one token unless the call would need more
    than _MAX_DELTAS deltas.
    """

    def __init__(self, *, token_delay: float = 0.0) -> None:
        if token_delay < 0:
            raise ValueError("token_delay must not be negative")
        self._token_delay = token_delay

    async def stream_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float = 0.0
    ) -> AsyncGenerator[StreamEvent, None]:
        tool_index = _tool_to_call(request)
        plan = _plan_choice(request, 0, tool_index)
        choices = [plan, *(_for_choice(plan, request, index, tool_index) for index in range(1, request.n))]
        longest = max((len(choice.deltas) for choice in choices), default=0)
        for position in range(longest):
            for choice in choices:
                if position < len(choice.deltas):
                    # Sleep even for a zero delay so that every delta is a point
                    # where the consumer's cancellation can land.
                    await asyncio.sleep(self._token_delay)
                    yield choice.deltas[position]
        yield Usage(
            prompt_tokens=count_message_tokens(request.messages),
            completion_tokens=sum(choice.completion_tokens for choice in choices),
        )

    async def complete_chat(
        self, request: ChatRequest, upstream_model: str, *, timeout: float = 0.0
    ) -> Sequence[StreamEvent]:
        return [event async for event in self.stream_chat(request, upstream_model, timeout=timeout)]

    async def generate_images(
        self, request: ImageRequest, upstream_model: str, *, timeout: float = 0.0
    ) -> tuple[GeneratedImage, ...]:
        """Real PNGs of the requested size, drawn from the prompt (always base64: the gateway stores
        them when the caller asked for URLs). Drawn in a worker thread: a large PNG is real CPU work."""
        encoded = await asyncio.to_thread(
            lambda: [
                base64.b64encode(
                    render_png(request.prompt, request.size or _IMAGE_SIZE, request.quality or "standard", index)
                ).decode("ascii")
                for index in range(request.n)
            ]
        )
        return tuple(GeneratedImage(b64_json=data, revised_prompt=request.prompt) for data in encoded)


def _tool_to_call(request: ChatRequest) -> int | None:
    """The index in request.tools of the tool to call, or None to answer in text."""
    choice = request.tool_choice
    if choice.mode == "none":
        return None
    if choice.mode == "function":
        for index, tool in enumerate(request.tools):
            if tool.name == choice.function_name:
                return index
        raise GatewayError(
            Reason.INVALID_VALUE, f"tool_choice names an unknown function {choice.function_name!r}", param="tool_choice"
        )
    if not request.tools:
        if choice.mode == "required":
            raise GatewayError(
                Reason.INVALID_VALUE, "tool_choice 'required' needs at least one tool", param="tool_choice"
            )
        return None
    if choice.mode == "required":
        return 0
    text = request.last_user_text
    for index, tool in enumerate(request.tools):
        if tool.name and re.search(rf"(?<!\w){re.escape(tool.name)}(?!\w)", text, re.IGNORECASE):
            return index
    return 0 if _TOOL_WORD.search(text) else None


def _for_choice(plan: _Choice, request: ChatRequest, index: int, tool_index: int | None) -> _Choice:
    """Choice 0's plan for choice `index`: the same deltas under its index (and its own call id)."""
    deltas = []
    for delta in plan.deltas:
        calls = delta.tool_calls
        if calls and calls[0].id:
            calls = (replace(calls[0], id=_call_id(request, index, tool_index or 0)),)
        deltas.append(replace(delta, index=index, tool_calls=calls))
    return _Choice(tuple(deltas), plan.completion_tokens)


def _plan_choice(request: ChatRequest, index: int, tool_index: int | None) -> _Choice:
    if tool_index is not None:
        return _plan_tool_call(request, index, tool_index)
    text = _cut_at_stop(_reply_text(request), request.stop)
    finish: FinishReason = "stop"
    pieces = split_tokens(text)
    limit = request.max_tokens
    if limit is not None and count_tokens(text) > limit:
        # Every piece holds exactly one token unless the text is blank.
        pieces, finish = pieces[: max(limit, 0)], "length"
    per_delta = -(-len(pieces) * request.n // _MAX_DELTAS)
    if per_delta > 1:
        pieces = ["".join(pieces[start : start + per_delta]) for start in range(0, len(pieces), per_delta)]
    deltas = [ChoiceDelta(index=index, content=piece) for piece in pieces]
    deltas.append(ChoiceDelta(index=index, finish_reason=finish))
    return _Choice(tuple(deltas), count_tokens("".join(pieces)))


def _reply_text(request: ChatRequest) -> str:
    user_text = request.last_user_text
    reply = f"Echo: {user_text or '(no user message)'}"
    for message in reversed(request.messages):
        if message.role == "user":
            reply += " [image]" * sum(isinstance(part, ImagePart) for part in message.content)
            break
    response_format = request.response_format
    if response_format.type == "json_object":
        return json.dumps({"echo": reply}, ensure_ascii=False)
    if response_format.type == "json_schema":
        return json.dumps(instance_of(response_format.schema or {}, text=user_text), ensure_ascii=False)
    return reply


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """`text` up to, not including, the earliest stop sequence in it."""
    cut = min((found for found in (text.find(s) for s in stop if s) if found >= 0), default=len(text))
    return text[:cut]


def _plan_tool_call(request: ChatRequest, index: int, tool_index: int) -> _Choice:
    tool: FunctionTool = request.tools[tool_index]
    arguments = json.dumps(instance_of(tool.parameters, text=request.last_user_text), separators=(",", ":"))
    finish: FinishReason = "tool_calls"
    name_tokens = count_tokens(tool.name)
    limit = request.max_tokens
    if limit is not None and name_tokens + count_tokens(arguments) > limit:
        finish = "length"
        if limit < name_tokens:
            # Not even the name fits: the call never starts.
            return _Choice((ChoiceDelta(index=index, finish_reason=finish),), 0)
        arguments = "".join(split_tokens(arguments)[: limit - name_tokens])
    call_id = _call_id(request, index, tool_index)
    deltas = [ChoiceDelta(index=index, tool_calls=(ToolCallDelta(index=0, id=call_id, name=tool.name),))]
    chunk = max(_ARGUMENT_CHUNK, -(-len(arguments) * request.n // _MAX_DELTAS))
    for start in range(0, len(arguments), chunk):
        piece = arguments[start : start + chunk]
        deltas.append(ChoiceDelta(index=index, tool_calls=(ToolCallDelta(index=0, arguments=piece),)))
    deltas.append(ChoiceDelta(index=index, finish_reason=finish))
    return _Choice(tuple(deltas), name_tokens + count_tokens(arguments))


def _call_id(request: ChatRequest, index: int, tool_index: int) -> str:
    # repr() of the frozen message dataclasses is stable across runs, unlike hash().
    seed = f"{request.messages!r}|{index}|{tool_index}".encode()
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]
