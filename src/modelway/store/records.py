"""Rows the store keeps, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from modelway.frozen import slot_init

__all__ = ["AccountRecord", "ChatMessageRecord", "ConversationRecord", "DailyUsage", "KeyRecord", "UsageRecord"]


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """An account. Its balance lives in the ledger, not here: it changes per call."""

    id: str
    name: str
    plan: str
    created_at: int


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key. The secret itself is never stored: only its SHA-256."""

    id: str
    account_id: str
    name: str
    secret_hash: str
    # Last four characters of the secret, so a person can tell keys apart.
    hint: str
    created_at: int
    permissions: tuple[str, ...] = ()
    expires_at: int | None = None
    is_enabled: bool = True
    last_used_at: int | None = None
    # Requests per minute; None: the plan's.
    rate_limit: int | None = None
    # Tokens per UTC day; None: the plan's.
    daily_token_budget: int | None = None
    # Models the key may call; empty: all.
    allowed_models: tuple[str, ...] = ()


@slot_init
@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One call, success or failure."""

    request_id: str
    account_id: str
    key_id: str
    surface: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost: int  # micro-credits actually charged
    latency_ms: int
    status: int
    error_code: str
    created_at: float
    # The caller's own id for the call (x-client-request-id), clipped; request_id is always ours.
    client_request_id: str = ""


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: str  # YYYY-MM-DD, UTC
    requests: int
    input_tokens: int
    output_tokens: int
    cost: int  # micro-credits


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A chat/send conversation; it belongs to one account and is seen by that account's keys only."""

    id: int
    account_id: str
    title: str  # the start of its first message
    model: str  # catalog id of the model that answered last
    created_at: float
    updated_at: float
    message_count: int


@dataclass(frozen=True, slots=True)
class ChatMessageRecord:
    """One message of a conversation: the caller's ("user") or the model's ("assistant")."""

    id: int
    conversation_id: int
    role: str
    content: str
    model: str
    tokens: int  # the call's total tokens on an assistant message; 0 on the caller's
    created_at: float
