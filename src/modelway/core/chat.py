"""Chat orchestration: admission -> catalog -> provider -> metering, shared by every surface."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace

from modelway.core.catalog import Catalog
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.metering import CallMeter
from modelway.core.tokens import count_message_tokens, count_tokens
from modelway.core.types import ChatRequest, ChoiceDelta, FinishReason, StreamEvent, ToolCall, Usage
from modelway.errors import InvalidRequest, PermissionDenied
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


class _ChoiceBuilder:
    """Accumulates one choice's deltas into its final text and tool calls."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish_reason: FinishReason = "stop"

    def add(self, delta: ChoiceDelta) -> None:
        self.text.append(delta.content)
        for piece in delta.tool_calls:
            call = self.calls.setdefault(piece.index, ["", "", ""])
            call[0] = call[0] or piece.id
            call[1] = call[1] or piece.name
            call[2] += piece.arguments
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

    def build(self, index: int) -> CompletedChoice:
        calls = tuple(ToolCall(id=i, name=n, arguments=a) for _, (i, n, a) in sorted(self.calls.items()))
        text = "".join(self.text)
        return CompletedChoice(
            index=index,
            content=None if calls and not text else text,
            tool_calls=calls,
            finish_reason=self.finish_reason,
        )


class ChatEngine:
    def __init__(self, catalog: Catalog, providers: ProviderRegistry, clock: Clock) -> None:
        self._catalog = catalog
        self._providers = providers
        self._clock = clock

    def start(self, request: ChatRequest, caller: Caller, meter: CallMeter) -> ChatStream:
        """Admits the call before anything goes upstream, raising at once when it may not run:
        unknown model (404), model outside the key's allow-list (403), prompt over the plan's
        cap (400), daily token budget spent (429), credits short of the worst case."""
        model = self._catalog.resolve(request.model)
        if caller.key.allowed_models and model.id not in caller.key.allowed_models:
            raise PermissionDenied(
                f"This API key may not use the model `{model.id}`.", code="model_not_allowed", param="model"
            )
        prompt_tokens = count_message_tokens(request.messages)
        if prompt_tokens > caller.plan.max_input_tokens:
            raise InvalidRequest(
                f"This request has {prompt_tokens} input tokens; the {caller.plan.name} plan allows at most "
                f"{caller.plan.max_input_tokens} per request.",
                code="input_too_large",
                param="messages",
            )
        cap = (
            model.max_output_tokens if request.max_tokens is None else min(request.max_tokens, model.max_output_tokens)
        )
        meter.admit(caller, model, prompt_tokens, cap * request.n)
        request = replace(request, max_tokens=cap)
        return ChatStream(
            id="chatcmpl-" + secrets.token_urlsafe(18),
            created=int(self._clock.now()),
            model=model.id,
            events=self._metered(request, model.provider, model.upstream_name, meter),
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

    async def complete(self, request: ChatRequest, caller: Caller, meter: CallMeter) -> Completion:
        stream = self.start(request, caller, meter)
        choices = [_ChoiceBuilder() for _ in range(request.n)]
        usage = Usage()
        try:
            async with aclosing(stream.events) as events:
                async for event in events:
                    if isinstance(event, Usage):
                        usage = event
                    else:
                        choices[event.index].add(event)
        except BaseException:
            # A whole answer is delivered at the end or not at all: a call
            # that fails (or is abandoned) half-way delivered nothing.
            meter.completion_tokens = 0
            raise
        return Completion(
            id=stream.id,
            created=stream.created,
            model=stream.model,
            choices=tuple(choice.build(index) for index, choice in enumerate(choices)),
            usage=usage,
        )


def _delta_tokens(delta: ChoiceDelta) -> int:
    tokens = count_tokens(delta.content) if delta.content else 0
    for call in delta.tool_calls:
        tokens += count_tokens(call.name) + count_tokens(call.arguments)
    return tokens
