"""API key secrets: minting and hashing. The secret exists in clear only when minted."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from modelway.store import KeyRecord

__all__ = ["IssuedKey", "hash_secret", "issue_key", "rotate_key"]


def hash_secret(secret: str) -> str:
    # Secrets carry 256 random bits, so a plain SHA-256 cannot be brute-forced;
    # a slow password hash would only slow every request down.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly minted key: the only moment the secret exists in clear."""

    record: KeyRecord
    secret: str


def _mint(prefix: str) -> tuple[str, str, str]:
    secret = prefix + secrets.token_urlsafe(32)
    return secret, hash_secret(secret), secret[-4:]


def issue_key(
    account_id: str,
    name: str,
    *,
    prefix: str,
    now: int,
    permissions: tuple[str, ...],
    expires_at: int | None = None,
    rate_limit: int | None = None,
    daily_token_budget: int | None = None,
    allowed_models: tuple[str, ...] = (),
) -> IssuedKey:
    secret, digest, hint = _mint(prefix)
    record = KeyRecord(
        id="key_" + secrets.token_hex(12),
        account_id=account_id,
        name=name,
        secret_hash=digest,
        hint=hint,
        created_at=now,
        permissions=permissions,
        expires_at=expires_at,
        rate_limit=rate_limit,
        daily_token_budget=daily_token_budget,
        allowed_models=allowed_models,
    )
    return IssuedKey(record=record, secret=secret)


def rotate_key(key: KeyRecord, *, prefix: str) -> IssuedKey:
    """The same key with a new secret; the old secret stops working when this is stored."""
    secret, digest, hint = _mint(prefix)
    return IssuedKey(record=replace(key, secret_hash=digest, hint=hint), secret=secret)
