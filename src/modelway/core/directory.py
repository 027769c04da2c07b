"""Accounts and keys in memory, for the hot path, kept coherent with the store."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from modelway.config import Config, PlanConfig
from modelway.core.clock import Clock
from modelway.core.keys import hash_secret
from modelway.errors import AuthenticationFailed
from modelway.store import AccountRecord, KeyRecord, SqliteStore

__all__ = ["Caller", "Directory"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key, its account and the account's plan."""

    key: KeyRecord
    account: AccountRecord
    plan: PlanConfig

    def may_use(self, permission: str) -> bool:
        return permission in self.key.permissions


class Directory:
    """Every account and key, in memory.

    Another process (the CLI, another replica) may change them: a cheap
    `PRAGMA data_version` poll reloads when the file changed, and an unknown
    secret triggers the same check once before it is refused. Changes made
    through this process are applied to memory at once.
    """

    def __init__(
        self,
        store: SqliteStore,
        config: Config,
        clock: Clock,
        on_reload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        # Others that mirror the store (balances) reload with the directory.
        self._on_reload = on_reload
        self._config = config
        self._clock = clock
        self._keys_by_hash: dict[str, KeyRecord] = {}
        self._keys_by_id: dict[str, KeyRecord] = {}
        self._accounts: dict[str, AccountRecord] = {}
        self._data_version: int | None = None
        self._refresh_lock = asyncio.Lock()
        self._last_used: dict[str, int] = {}

    async def load(self) -> None:
        async with self._refresh_lock:
            await self._reload()

    async def _reload(self) -> None:
        self._data_version = await self._store.data_version()
        self._accounts = {account.id: account for account in await self._store.list_accounts()}
        keys = await self._store.list_keys()
        self._keys_by_id = {key.id: key for key in keys}
        self._keys_by_hash = {key.secret_hash: key for key in keys}
        if self._on_reload is not None:
            await self._on_reload()

    async def refresh(self) -> bool:
        """Reloads when another connection committed since the last look; True if it did."""
        async with self._refresh_lock:
            if await self._store.data_version() == self._data_version:
                return False
            await self._reload()
            return True

    # The hot path.

    async def authenticate(self, secret: str) -> Caller:
        if not secret:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        digest = hash_secret(secret)
        key = self._keys_by_hash.get(digest)
        if key is None:
            await self.refresh()
            key = self._keys_by_hash.get(digest)
        # The lookup is by hash of a high-entropy secret; the final comparison
        # is constant-time all the same.
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        now = int(self._clock.now())
        if not key.is_enabled:
            raise AuthenticationFailed("This API key is disabled.", code="api_key_disabled")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationFailed("This API key has expired.", code="api_key_expired")
        account = self._accounts.get(key.account_id)
        if account is None:
            raise AuthenticationFailed("This API key's account no longer exists.", code="invalid_api_key")
        self._last_used[key.id] = now
        return Caller(key=key, account=account, plan=self.plan_of(account))

    def plan_of(self, account: AccountRecord) -> PlanConfig:
        try:
            return self._config.plan(account.plan)
        except ValueError:
            # An account whose plan left the configuration gets the default one.
            return self._config.plan(self._config.limits.default_plan)

    def take_last_used(self) -> dict[str, int]:
        """Hands over the last-used times gathered since the previous call, to be written."""
        taken, self._last_used = self._last_used, {}
        for key_id, at in taken.items():
            key = self._keys_by_id.get(key_id)
            if key is not None:
                self._remember(replace(key, last_used_at=at))
        return taken

    # Reads and writes for administration.

    def account(self, account_id: str) -> AccountRecord | None:
        return self._accounts.get(account_id)

    def keys_of(self, account_id: str) -> list[KeyRecord]:
        return [self._with_last_use(key) for key in self._keys_by_id.values() if key.account_id == account_id]

    def key(self, key_id: str) -> KeyRecord | None:
        key = self._keys_by_id.get(key_id)
        return None if key is None else self._with_last_use(key)

    def _with_last_use(self, key: KeyRecord) -> KeyRecord:
        """The key as stored, with a last use that is not written yet."""
        last_used = self._last_used.get(key.id)
        if last_used is not None and (key.last_used_at is None or key.last_used_at < last_used):
            return replace(key, last_used_at=last_used)
        return key

    # Key changes take effect in memory before the write is awaited: a
    # concurrent create must count the new key, and a rotated or deleted
    # secret must stop working at once. A failed write puts things back.

    async def add_key(self, key: KeyRecord) -> None:
        await self._swap(None, key, self._store.insert_key(key))

    async def replace_key(self, key: KeyRecord) -> None:
        await self._swap(self._keys_by_id.get(key.id), key, self._store.replace_key(key))

    async def delete_key(self, key_id: str) -> None:
        await self._swap(self._keys_by_id.get(key_id), None, self._store.delete_key(key_id))

    async def _swap(self, old: KeyRecord | None, new: KeyRecord | None, write: Awaitable[object]) -> None:
        if old is not None:
            self._forget(old)
        if new is not None:
            self._remember(new)
        try:
            await write
        except BaseException:
            if new is not None:
                self._forget(new)
            if old is not None:
                self._remember(old)
            raise

    def _remember(self, key: KeyRecord) -> None:
        self._keys_by_id[key.id] = key
        self._keys_by_hash[key.secret_hash] = key

    def _forget(self, key: KeyRecord) -> None:
        self._keys_by_id.pop(key.id, None)
        self._keys_by_hash.pop(key.secret_hash, None)
