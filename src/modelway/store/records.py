"""Rows the store keeps, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyRecord", "UsageRecord"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key. The secret itself is never stored: only its SHA-256."""

    id: str
    name: str
    secret_hash: str
    # Last four characters of the secret, so a person can tell keys apart.
    hint: str
    created_at: int
    expires_at: int | None = None
    is_enabled: bool = True
    last_used_at: int | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One call, success or failure."""

    request_id: str
    key_id: str
    surface: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    status: int
    error_code: str
    created_at: float
