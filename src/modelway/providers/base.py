"""The contract every provider adapter fulfils."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from modelway.core.types import ChatRequest, StreamEvent

__all__ = ["ChatProvider"]


class ChatProvider(Protocol):
    """Streams one chat completion.

    Yields ChoiceDelta events in order and exactly one Usage last. Raises a
    modelway.errors.GatewayError subclass on failure. `upstream_model` is the
    provider's own name for the model the catalog entry points at.
    """

    def stream_chat(self, request: ChatRequest, upstream_model: str) -> AsyncGenerator[StreamEvent, None]: ...
