"""Accounts and keys in memory, for the hot path, kept coherent with the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from modelway.config import Config, PlanConfig
from modelway.core.clock import Clock
from modelway.core.keys import hash_secret
from modelway.core.writes import await_write
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init
from modelway.store import AccountRecord, KeyRecord, Store

__all__ = ["Caller", "Directory"]

# An unknown secret makes the directory ask the store whether keys changed,
# at most this often, so a flood of bad keys cannot monopolise the store.
MISS_REFRESH_SECONDS = 0.1


@slot_init
@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key, its account and the account's plan."""

    key: KeyRecord
    account: AccountRecord
    plan: PlanConfig

    def may_use(self, permission: str) -> bool:
        return permission in self.key.permissions

    def may_use_model(self, model_id: str) -> bool:
        """A key with a model allow-list sees and uses only those models."""
        return not self.key.allowed_models or model_id in self.key.allowed_models


class Directory:
    """Every account and key, in memory.

    Another process (the CLI, another replica) may change them: a cheap
    `data_version` poll (SQLite's PRAGMA data_version, PostgreSQL's revision
    counter) reloads when the store changed, and an unknown
    secret triggers the same check before it is refused. Changes made through
    this process are applied to memory at once (on SQLite its own commits do
    not move its data_version; on PostgreSQL they do, costing one reload).
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock,
        on_reload: Callable[[], Awaitable[None]] | None = None,
        on_key_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        # Others that mirror the store (balances) reload with the directory.
        self._on_reload = on_reload
        # Told after every key write of this process commits (other processes are then told to reload).
        self._on_key_change = on_key_change
        self._keys_by_hash: dict[str, KeyRecord] = {}
        self._keys_by_id: dict[str, KeyRecord] = {}
        self._accounts: dict[str, AccountRecord] = {}
        self._data_version: int | None = None
        self._refresh_lock = asyncio.Lock()
        self._last_miss_refresh = float("-inf")
        self._miss_refresh: asyncio.Future[None] | None = None
        # Bumped by every key write of this process: a snapshot read while
        # one was under way may predate it, and is not applied.
        self._writes = 0
        self._writing = 0
        self._last_used: dict[str, int] = {}

    async def load(self) -> None:
        """Reads every account and key again (also when told another process changed one)."""
        async with self._refresh_lock:
            await self._reload()

    async def _reload(self) -> None:
        writes_before = self._writes
        version = await self._store.data_version()
        accounts = await self._store.list_accounts()
        keys = await self._store.list_keys()
        if self._writing or self._writes != writes_before:
            return  # stale next to our own write; data_version is kept, so the next refresh reads again
        self._data_version = version
        self._accounts = {account.id: account for account in accounts}
        # A snapshot read before a usage write committed holds an older last use than memory does.
        keys = [_later_use(key, self._keys_by_id.get(key.id)) for key in keys]
        self._keys_by_id = {key.id: key for key in keys}
        self._keys_by_hash = {key.secret_hash: key for key in keys}
        if self._on_reload is not None:
            await self._on_reload()

    async def refresh(self) -> None:
        """Reloads when another connection committed since the last look."""
        async with self._refresh_lock:
            if await self._store.data_version() != self._data_version:
                await self._reload()

    async def _refresh_on_miss(self) -> None:
        """One look at the store for all the misses that arrive together; none again for a moment."""
        if self._miss_refresh is None or self._miss_refresh.done():
            now = self._clock.monotonic()
            if now - self._last_miss_refresh < MISS_REFRESH_SECONDS:
                return
            self._last_miss_refresh = now
            self._miss_refresh = asyncio.ensure_future(self.refresh())
        await asyncio.shield(self._miss_refresh)

    # The hot path.

    async def authenticate(self, secret: str) -> Caller:
        """The caller whose key `secret` is (Gate has refused a missing one already, in its surface's words)."""
        # Keys are found by the SHA-256 of the secret, never by comparing
        # secrets: how long a lookup takes depends on the digest, which tells
        # an attacker nothing about any stored secret.
        digest = hash_secret(secret)
        key = self._keys_by_hash.get(digest)
        if key is None:
            await self._refresh_on_miss()
            key = self._keys_by_hash.get(digest)
        if key is None:
            raise GatewayError(Reason.INVALID_API_KEY, "Incorrect API key provided.")
        now = int(self._clock.now())
        if not key.is_enabled:
            raise GatewayError(Reason.API_KEY_DISABLED, "This API key is disabled.")
        if key.expires_at is not None and key.expires_at <= now:
            raise GatewayError(Reason.API_KEY_EXPIRED, "This API key has expired.")
        account = self._accounts.get(key.account_id)
        if account is None:
            raise GatewayError(Reason.INVALID_API_KEY, "This API key's account no longer exists.")
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

    def restore_last_used(self, taken: dict[str, int]) -> None:
        """Takes back times whose write failed, so the next write carries them."""
        for key_id, at in taken.items():
            self._last_used[key_id] = max(at, self._last_used.get(key_id, at))

    # Reads and writes for administration.

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
        self._writes += 1
        self._writing += 1

        def settled(error: BaseException | None) -> None:
            self._writing -= 1
            self._writes += 1
            if error is not None:
                if new is not None:
                    self._forget(new)
                if old is not None:
                    self._remember(old)
            elif self._on_key_change is not None:
                self._on_key_change()

        await await_write(write, settled)

    def _remember(self, key: KeyRecord) -> None:
        self._keys_by_id[key.id] = key
        self._keys_by_hash[key.secret_hash] = key

    def _forget(self, key: KeyRecord) -> None:
        self._keys_by_id.pop(key.id, None)
        self._keys_by_hash.pop(key.secret_hash, None)


def _later_use(loaded: KeyRecord, known: KeyRecord | None) -> KeyRecord:
    """`loaded` from the store, with the last use memory knows if that is later: last use never moves back."""
    if known is None or known.last_used_at is None:
        return loaded
    if loaded.last_used_at is not None and loaded.last_used_at >= known.last_used_at:
        return loaded
    return replace(loaded, last_used_at=known.last_used_at)
