"""Reading proto3 messages the way JSON callers wrote them."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

__all__ = ["optional"]


def optional(message: Message, name: str) -> Any:
    """A field with presence (`optional`, or a message) as the caller sent it: None when absent."""
    return getattr(message, name) if message.HasField(name) else None
