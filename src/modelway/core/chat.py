"""Chat orchestration: catalog -> provider -> metering, shared by every surface."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace

from modelway.core.catalog import Catalog
from modelway.core.clock import Clock
from modelway.core.metering import CallMeter
from modelway.core.tokens import count_message_tokens, count_tokens
from modelway.core.types import ChatRequest, ChoiceDelta, FinishReason, StreamEvent, ToolCall, Usage
from modelway.providers.registry import ProviderRegistry

__all__ = ["ChatEngine", "ChatStream", "CompletedChoice", "Completion"]


@dataclass(frozen=True, slots=True)
class CompletedChoice:
    index: int
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class Completion:
    id: str
    created: int
    model: str
    choices: tuple[CompletedChoice, ...]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChatStream:
    """A completion being produced: its identity, and its events."""

    id: str
    created: int
    model: str
    events: AsyncGenerator[StreamEvent, None]


class ChatEngine:
    def __init__(self, catalog: Catalog, providers: ProviderRegistry, clock: Clock) -> None:
        self._catalog = catalog
        self._providers = providers
        self._clock = clock

    def start(self, request: ChatRequest, meter: CallMeter) -> ChatStream:
        """Resolves the model (raising NotFound at once) and prepares the stream."""
        model = self._catalog.resolve(request.model)
        meter.model, meter.provider = model.id, model.provider
        meter.prompt_tokens = count_message_tokens(request.messages)
        cap = (
            model.max_output_tokens if request.max_tokens is None else min(request.max_tokens, model.max_output_tokens)
        )
        request = replace(request, max_tokens=cap)
        events = self._metered(request, model.provider, model.upstream_name, meter)
        return ChatStream(
            id="chatcmpl-" + secrets.token_urlsafe(18),
            created=int(self._clock.now()),
            model=model.id,
            events=events,
        )

    async def _metered(
        self, request: ChatRequest, provider: str, upstream_model: str, meter: CallMeter
    ) -> AsyncGenerator[StreamEvent, None]:
        # Counted as it passes, so a stream cut short is metered for what was
        # delivered; the provider's own usage, when it arrives, is the truth.
        async with aclosing(self._providers.get(provider).stream_chat(request, upstream_model)) as events:
            async for event in events:
                if isinstance(event, Usage):
                    meter.prompt_tokens = event.prompt_tokens
                    meter.completion_tokens = event.completion_tokens
                else:
                    meter.completion_tokens += _delta_tokens(event)
                yield event

    async def complete(self, request: ChatRequest, meter: CallMeter) -> Completion:
        stream = self.start(request, meter)
        texts: dict[int, list[str]] = {}
        calls: dict[int, dict[int, list[str]]] = {}
        finish: dict[int, FinishReason] = {}
        usage = Usage()
        async with aclosing(stream.events) as events:
            async for event in events:
                if isinstance(event, Usage):
                    usage = event
                    continue
                texts.setdefault(event.index, []).append(event.content)
                for piece in event.tool_calls:
                    parts = calls.setdefault(event.index, {}).setdefault(piece.index, ["", "", ""])
                    parts[0] = parts[0] or piece.id
                    parts[1] = parts[1] or piece.name
                    parts[2] += piece.arguments
                if event.finish_reason is not None:
                    finish[event.index] = event.finish_reason
        choices = []
        for index in range(request.n):
            tool_calls = tuple(
                ToolCall(id=call_id, name=name, arguments=arguments)
                for _, (call_id, name, arguments) in sorted(calls.get(index, {}).items())
            )
            text = "".join(texts.get(index, []))
            choices.append(
                CompletedChoice(
                    index=index,
                    content=None if tool_calls and not text else text,
                    tool_calls=tool_calls,
                    finish_reason=finish.get(index, "stop"),
                )
            )
        return Completion(id=stream.id, created=stream.created, model=stream.model, choices=tuple(choices), usage=usage)


def _delta_tokens(delta: ChoiceDelta) -> int:
    tokens = count_tokens(delta.content) if delta.content else 0
    for call in delta.tool_calls:
        tokens += count_tokens(call.name) + count_tokens(call.arguments)
    return tokens
