"""Key changes reach every process at once: a Redis channel says "reload", each process reloads its keys.

A process that wrote a key (created, changed, rotated, disabled, deleted it)
publishes on `mw:keys`; every other process subscribed reloads its
directory from the store. Messages can be missed (Redis away): after each
(re)subscription the process reloads anyway, and the directory's periodic
refresh (store.refresh_seconds) stays as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modelway.store.base import StoreUnavailable

__all__ = ["CHANNEL", "KeyChanges", "announce_key_change"]

log = logging.getLogger(__name__)

CHANNEL = "mw:keys"
_RESUBSCRIBE_SECONDS = 0.5


async def announce_key_change(client: aioredis.Redis, sender: str) -> bool:
    """Tells every process that keys changed; whether Redis took the message."""
    try:
        await client.publish(CHANNEL, sender)
    except (RedisError, OSError):
        return False
    return True


class KeyChanges:
    """Publishes this process's key writes and reloads on everyone else's."""

    def __init__(self, client: aioredis.Redis, sender: str, reload: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._sender = sender
        self._reload = reload
        self._listener: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[bool]] = set()
        self._store_away = False

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="key-changes")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._sending:
            await asyncio.wait(self._sending, timeout=1.0)

    def changed(self) -> None:
        """A key write of this process committed (called from the directory; never blocks)."""
        task = asyncio.ensure_future(announce_key_change(self._client, self._sender))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _reload_keys(self) -> None:
        # The store away (PostgreSQL down) is no reason to drop the subscription: the next message
        # or the periodic refresh reloads once it is back. Said once per outage, without a traceback.
        try:
            await self._reload()
        except StoreUnavailable:
            if not self._store_away:
                log.warning("keys could not be reloaded after a change (the store is unreachable); retried on the next")
            self._store_away = True
            return
        self._store_away = False

    async def _listen(self) -> None:
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # Whatever changed while this process was not listening.
                    await self._reload_keys()
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None and message.get("data") != self._sender:
                            await self._reload_keys()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                pass  # Redis away: the periodic refresh covers for it; subscribe again shortly
            except Exception:
                log.exception("key change listener failed")
            await asyncio.sleep(_RESUBSCRIBE_SECONDS)
