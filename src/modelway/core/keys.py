"""API keys: minting secrets, and the in-memory key ring the hot path authenticates against."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from modelway.core.clock import Clock
from modelway.errors import AuthenticationFailed
from modelway.store import KeyRecord, SqliteStore

__all__ = ["IssuedKey", "KeyRing", "hash_secret", "issue_key"]


def hash_secret(secret: str) -> str:
    # Secrets carry 256 random bits, so a plain SHA-256 cannot be brute-forced;
    # a slow password hash would only slow every request down.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly minted key: the only moment the secret exists in clear."""

    record: KeyRecord
    secret: str


def issue_key(name: str, *, prefix: str, now: int, expires_at: int | None = None) -> IssuedKey:
    secret = prefix + secrets.token_urlsafe(32)
    record = KeyRecord(
        id="key_" + secrets.token_hex(12),
        name=name,
        secret_hash=hash_secret(secret),
        hint=secret[-4:],
        created_at=now,
        expires_at=expires_at,
    )
    return IssuedKey(record=record, secret=secret)


class KeyRing:
    """Every key, by hash, in memory; kept coherent with the store.

    Another process (the CLI, another replica) may change keys: a cheap
    `PRAGMA data_version` poll reloads the ring when the file changed, and an
    unknown secret triggers the same check once before it is refused.
    """

    def __init__(self, store: SqliteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._by_hash: dict[str, KeyRecord] = {}
        self._data_version: int | None = None
        self._refresh_lock = asyncio.Lock()
        self._last_used: dict[str, int] = {}

    async def load(self) -> None:
        async with self._refresh_lock:
            await self._reload()

    async def _reload(self) -> None:
        self._data_version = await self._store.data_version()
        self._by_hash = {key.secret_hash: key for key in await self._store.list_keys()}

    async def refresh(self) -> None:
        """Reloads when another connection committed since the last look."""
        async with self._refresh_lock:
            if await self._store.data_version() != self._data_version:
                await self._reload()

    async def add(self, issued: IssuedKey) -> None:
        await self._store.insert_key(issued.record)
        self._by_hash[issued.record.secret_hash] = issued.record

    async def authenticate(self, secret: str) -> KeyRecord:
        if not secret:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        digest = hash_secret(secret)
        key = self._by_hash.get(digest)
        if key is None:
            await self.refresh()
            key = self._by_hash.get(digest)
        # The lookup is by hash of a high-entropy secret; the final comparison
        # is constant-time all the same.
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        now = int(self._clock.now())
        if not key.is_enabled:
            raise AuthenticationFailed("This API key is disabled.", code="api_key_disabled")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationFailed("This API key has expired.", code="api_key_expired")
        self._last_used[key.id] = now
        return key

    def take_last_used(self) -> dict[str, int]:
        """Hands over the last-used times gathered since the previous call."""
        taken, self._last_used = self._last_used, {}
        return taken
