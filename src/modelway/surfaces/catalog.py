"""The catalog and chat/send dialect: its envelope, its error words, and what its requests may hold.

    success  {"success": true, "message": "Success", "data": ...}
    error    {"success": false, "message": "..."}    401 "Invalid API key", 429 "No points remaining",
                                                     400 "Message cannot be empty", 403, 404, 422, 429

    GET  /api/models?q&category&type&page   public: the catalog, PAGE_SIZE a page
    GET  /api/models/{id_or_slug}           public: one model (numeric catalog id or slug)
    GET  /api/categories                    public: categories that hold a model
    POST /api/v1/chat/send                  X-API-Key: {model_id, message, conversation_id?}
    GET  /api/v1/chat/conversations[/{id}]  X-API-Key: the account's conversations, one's messages

A model shows only what a caller may know: never its provider, upstream
name, fallbacks, system prompt, or (when the operator marks them private)
its prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from modelway.config import CAPABILITIES, MICRO, MODEL_TYPES, ModelConfig
from modelway.core.catalog import Category, Page
from modelway.core.wording import Wording
from modelway.errors import REASONS, GatewayError, Reason, clip
from modelway.store.records import ChatMessageRecord, ConversationRecord
from modelway.surfaces.json_body import load_json

__all__ = [
    "CHAT_SEND",
    "MAX_MESSAGE_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_STORED_ID",
    "ChatSendDialect",
    "SendRequest",
    "categories_json",
    "conversation_id_of",
    "conversation_json",
    "envelope",
    "message_json",
    "model_json",
    "page_json",
    "page_of",
    "parse_send_body",
    "parse_send_request",
    "type_of",
    "unknown_conversation",
    "unknown_model",
]

# Reason -> (HTTP status, the API's fixed words or None for the error's own message). One table.
_TABLE: Mapping[Reason, tuple[int, str | None]] = MappingProxyType(
    {
        # Validation failures are 422; a body that is not JSON and an empty message are the API's 400s.
        **{reason: (422, None) for reason, info in REASONS.items() if info.http_status == 400},
        Reason.INVALID_BODY: (400, None),
        Reason.EMPTY_MESSAGE: (400, "Message cannot be empty"),
        # Whatever is wrong with the key, the API says the same (and tells a prober nothing more).
        **{reason: (401, "Invalid API key") for reason, info in REASONS.items() if info.http_status == 401},
        # Points are the account's credits; the API answers 429 for an empty balance.
        Reason.INSUFFICIENT_CREDITS: (429, "No points remaining"),
        **{reason: (info.http_status, None) for reason, info in REASONS.items() if info.http_status >= 403},
    }
)

# The longest `message` (characters) and search text (`q`) accepted.
MAX_MESSAGE_CHARS = 500_000
MAX_QUERY_CHARS = 256
# The highest page number a caller may ask for (far past any real list; keeps offsets small).
_MAX_PAGE = 1_000_000


def _credits(micro: int | float) -> float:
    return round(micro / MICRO, 6)


class ChatSendDialect:
    """chat/send and the catalog: usage rows say "chat-send"."""

    name = "chat-send"
    # What the Surface type asks for. chat/send shows none of it: its table answers these errors with
    # its own fixed words ("Invalid API key", "No points remaining"), and its answers are never streamed.
    wording = Wording(send_key="", spend_less="", answer_smaller="")

    def status(self, error: GatewayError) -> int:
        return _TABLE[error.reason][0]

    def message(self, error: GatewayError) -> str:
        return _TABLE[error.reason][1] or error.message

    def error_response(self, error: GatewayError) -> tuple[int, bytes]:
        return self.status(error), orjson.dumps({"success": False, "message": self.message(error)})


CHAT_SEND = ChatSendDialect()


def envelope(data: Any) -> bytes:
    return orjson.dumps({"success": True, "message": "Success", "data": data})


# --- catalog ------------------------------------------------------------------------------------


def model_json(model: ModelConfig) -> dict[str, Any]:
    """What the public catalog shows of a model."""
    pricing = (
        None
        if model.private_prices
        else {
            "currency": "credits",
            "input_per_1k_tokens": model.input_credits_per_1k,
            "output_per_1k_tokens": model.output_credits_per_1k,
            "per_request": model.credits_per_call,
            "per_image": model.credits_per_image,
        }
    )
    return {
        "id": model.number,
        "slug": model.slug,
        "name": model.name,
        "description": model.description,
        "category": model.category or None,
        "type": model.type,
        "capabilities": {name: name in model.capabilities for name in CAPABILITIES},
        "context_length": model.context_length,
        "max_output_tokens": model.max_output_tokens,
        "pricing": pricing,
        "created": model.created,
        "owned_by": model.owned_by,
    }


def page_json(page: Page) -> dict[str, Any]:
    return {
        "page": page.number,
        "per_page": page.size,
        "total": page.total,
        "total_pages": page.pages,
        "has_more": page.number < page.pages,
    }


def categories_json(categories: Sequence[Category]) -> list[dict[str, Any]]:
    return [{"name": category.name, "model_count": category.model_count} for category in categories]


def page_of(raw: str) -> int:
    """The `page` query parameter: 1 when absent; a whole number from 1 (422 otherwise)."""
    text = raw.strip()
    if not text:
        return 1
    # The length first: int() refuses thousands of digits (a ValueError, a 500).
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or not 1 <= int(text) <= _MAX_PAGE:
        raise GatewayError(
            Reason.INVALID_VALUE, f"page must be a whole number from 1 to {_MAX_PAGE}, got {clip(raw)!r}", param="page"
        )
    return int(text)


def type_of(raw: str) -> str:
    """The `type` query parameter: empty (any type) or one of MODEL_TYPES (422 otherwise)."""
    if raw and raw not in MODEL_TYPES:
        raise GatewayError(
            Reason.INVALID_VALUE, f"type must be one of {', '.join(MODEL_TYPES)}, got {clip(raw)!r}", param="type"
        )
    return raw


def query_of(raw: str) -> str:
    if len(raw) > MAX_QUERY_CHARS:
        raise GatewayError(
            Reason.STRING_ABOVE_MAX_LENGTH, f"q must be at most {MAX_QUERY_CHARS} characters, got {len(raw)}", param="q"
        )
    return raw


def unknown_model() -> GatewayError:
    return GatewayError(Reason.MODEL_NOT_FOUND, "Model not found", param="model_id")


def unknown_conversation() -> GatewayError:
    # The same words whether it never existed or is another account's: its existence is not told.
    return GatewayError(Reason.NOT_FOUND, "Conversation not found", param="conversation_id")


# --- conversations --------------------------------------------------------------------------------


def conversation_json(conversation: ConversationRecord) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "message_count": conversation.message_count,
        "created_at": int(conversation.created_at),
        "updated_at": int(conversation.updated_at),
    }


def message_json(message: ChatMessageRecord) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "model": message.model,
        "tokens": message.tokens,
        "created_at": int(message.created_at),
    }


# Stored ids are 64-bit signed integers (SQLite INTEGER, PostgreSQL bigint): a larger number names
# nothing stored, and passing it to the store would fail (OverflowError) as a 500.
MAX_STORED_ID = 2**63 - 1


def conversation_id_of(raw: str) -> int:
    """A conversation id from a URL path: a number that can be stored; anything else names no conversation (404)."""
    text = raw.strip()
    # The length is checked first: int() of thousands of digits is slow, and refused past 4,300.
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_STORED_ID:
        raise unknown_conversation()
    return int(text)


# --- chat/send requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A checked chat/send body: the model (numeric catalog id or slug, as text), the message, and
    the conversation it continues (None: a new one)."""

    model: str
    message: str
    conversation_id: int | None = None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return "an object" if isinstance(value, dict) else "an array"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_send_body(body: bytes) -> SendRequest:
    data = load_json(body, "The request body is not valid JSON ({problem}).")
    return parse_send_request(data)


def parse_send_request(data: Any) -> SendRequest:
    """Checks {model_id, message, conversation_id?}; fields the API does not define are ignored."""
    if not isinstance(data, dict):
        raise GatewayError(Reason.INVALID_BODY, f"The request body must be a JSON object, got {_kind(data)}.")
    model = data.get("model_id")
    if model is None or model == "":
        raise GatewayError(
            Reason.MISSING_REQUIRED_PARAMETER,
            "model_id is required: a model's numeric id or its slug (GET /api/models)",
            param="model_id",
        )
    if not (_whole(model) or isinstance(model, str)):
        raise GatewayError(
            Reason.INVALID_TYPE, f"model_id must be an integer or a string, got {_kind(model)}", param="model_id"
        )
    message = data.get("message")
    if message is not None and not isinstance(message, str):
        raise GatewayError(Reason.INVALID_TYPE, f"message must be a string, got {_kind(message)}", param="message")
    if not message or not message.strip():
        raise GatewayError(Reason.EMPTY_MESSAGE, "Message cannot be empty", param="message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise GatewayError(
            Reason.INPUT_TOO_LARGE,
            f"message is {len(message):,} characters long; at most {MAX_MESSAGE_CHARS:,} are accepted",
            param="message",
        )
    conversation = data.get("conversation_id")
    if conversation is not None and not (_whole(conversation) and conversation >= 1):
        raise GatewayError(
            Reason.INVALID_TYPE if not _whole(conversation) else Reason.INTEGER_BELOW_MIN,
            f"conversation_id must be a positive integer, got {clip(conversation)}",
            param="conversation_id",
        )
    if conversation is not None and conversation > MAX_STORED_ID:
        raise unknown_conversation()
    return SendRequest(model=str(model), message=message, conversation_id=conversation)
