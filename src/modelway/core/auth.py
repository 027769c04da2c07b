"""Reading the caller's credential from request metadata."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["bearer_secret"]


def bearer_secret(metadata: Mapping[str, str]) -> str:
    """The token of `Authorization: Bearer <token>`, or "" when absent or malformed."""
    scheme, _, token = metadata.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
