"""A choice's pieces that arrived together, merged into one: what a typed stream sends as one message.

The typed gRPC streams (ChatService.StreamChatCompletion, GeminiService and
GenerateService streaming) send one message per delta. When an upstream
delivers several events in one read (ChatRun.event_groups), those would be
as many messages, each a write and a wake-up in the server and its caller.
`coalesced` merges a group's consecutive pieces of the same choice into
one: the texts (and logprobs) joined in order, the fragments of one tool
call's arguments joined, the finish reason of the last. What a caller
assembles from the merged stream is exactly what it assembled from the
pieces; only the number of messages changes, never their order within a
choice, and nothing waits for company (a group is only what was ready).

A merge never crosses what a caller sees as a boundary: a piece after a
finished one, text after tool calls or tool calls after text, a new tool
call's first piece (its id and name) after another call's, and the Usage,
which stays its own, last event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modelway.core.types import ChoiceDelta, FinishReason, StreamEvent, ToolCallDelta

__all__ = ["coalesced"]


class _Merging:
    """One merged piece being built: a choice's consecutive deltas."""

    __slots__ = ("calls", "finish_reason", "index", "logprobs", "text")

    def __init__(self, first: ChoiceDelta) -> None:
        self.index = first.index
        self.text = [first.content]
        self.calls: list[ToolCallDelta] = list(first.tool_calls)
        self.finish_reason: FinishReason | None = first.finish_reason
        self.logprobs: list[Mapping[str, Any]] = list(first.logprobs)

    def take(self, delta: ChoiceDelta) -> bool:
        """Adds `delta` to this piece; False (and nothing added) when it must be a piece of its own."""
        if self.finish_reason is not None:
            return False
        has_text = any(self.text)
        if (has_text and delta.tool_calls) or (self.calls and delta.content):
            return False
        calls = self.calls
        for call in delta.tool_calls:
            last = calls[-1] if calls else None
            if last is None or call.id or call.name or call.index != last.index:
                # A new call (its opening piece carries the id): a boundary inside one delta is fine, the
                # caller sees the pieces in order, each with its own index.
                calls.append(call)
            else:
                calls[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + call.arguments)
        self.text.append(delta.content)
        self.logprobs.extend(delta.logprobs)
        self.finish_reason = delta.finish_reason
        return True

    def build(self) -> ChoiceDelta:
        return ChoiceDelta(
            index=self.index,
            content="".join(self.text),
            tool_calls=tuple(self.calls),
            finish_reason=self.finish_reason,
            logprobs=tuple(self.logprobs),
        )


def coalesced(group: Iterable[StreamEvent]) -> list[StreamEvent]:
    """The events of one group with each choice's consecutive pieces merged (see the module doc).

    Choices interleaved in the group keep their own order; the Usage keeps its place at the end.
    """
    out: list[_Merging | StreamEvent] = []
    growing: dict[int, _Merging] = {}  # choice -> its piece that may still take more
    for event in group:
        if not isinstance(event, ChoiceDelta):
            growing.clear()
            out.append(event)
            continue
        piece = growing.get(event.index)
        if piece is not None and piece.take(event):
            continue
        piece = _Merging(event)
        growing[event.index] = piece
        out.append(piece)
    return [item.build() if isinstance(item, _Merging) else item for item in out]
