"""Rebuilding the shared state from the store of record under a new epoch, and deleting old epochs' keys.

Run by the one process holding the lock `mw:rebuild` (see shared/link.py for
when, and for how the processes then register in the new epoch).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from modelway.config import SharedConfig
from modelway.core.budgets import DAY_SECONDS, day_start
from modelway.core.clock import Clock
from modelway.shared import scripts

if TYPE_CHECKING:
    from modelway.shared.link import BalanceSource

__all__ = ["Rebuilder", "Rebuilt", "run_id"]

log = logging.getLogger(__name__)


async def run_id(redis: aioredis.Redis) -> str:
    """Redis's run id: another one means Redis restarted (empty, or from a snapshot)."""
    info: dict[str, Any] = await redis.info("server")
    return str(info["run_id"])


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What one rebuild came to: the epoch it installed (None if none), and whether to try again at once."""

    epoch: str | None
    again: bool


class Rebuilder:
    """Reads every balance and today's token use from the store and installs them under a new epoch."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: BalanceSource,
        clock: Clock,
        config: SharedConfig,
        proc: str,
        script: Callable[[str], AsyncScript],
    ) -> None:
        self._redis = redis
        self._store = store
        self._clock = clock
        self._config = config
        self._proc = proc
        self._script = script

    async def run(self, opening: float, restart_opening: float) -> Rebuilt:
        """Holding the rebuild lock: waits the quiet time, reads the store, installs. The epoch opens
        for takes after `opening` seconds, or `restart_opening` when Redis restarted."""
        quiet = self._config.rebuild_quiet_seconds
        log.warning(
            "shared state has no marker (Redis restarted or was flushed): rebuilding it from the store "
            "after %.1fs; calls are refused meanwhile",
            quiet,
        )
        started = time.monotonic()
        try:
            return await self._after(quiet, started, opening, restart_opening)
        except BaseException:
            # Let the next try (this process's or another's) start at once, not when the lock expires.
            try:
                await self._script(scripts.REBUILD_GIVE_UP)(args=[self._proc])
            except Exception:
                log.debug("rebuild lock left to expire", exc_info=True)
            raise

    async def _after(self, quiet: float, started: float, opening: float, restart_opening: float) -> Rebuilt:
        redis = self._redis
        await asyncio.sleep(quiet)
        # Connections left idle since before a restart would fail the steps below one by one.
        await redis.connection_pool.disconnect(inuse_connections=False)
        # Read before the store: an operator's credits added while no epoch stood bump it (see
        # scripts.CREDIT_ADD); a bump after this read may be missing from what is read next.
        adds = await redis.get("mw:credit-adds") or "0"
        run = await run_id(redis)
        # decode_responses: str or None. No epoch installed by this Redis run: it restarted.
        last: list[str | None] = await redis.mget("mw:epoch:last", "mw:epoch:run")  # type: ignore[assignment]
        restarted = last[0] is None or last[1] != run
        balances = await self._store.balances()
        today = day_start(self._clock.now())
        used = await self._store.tokens_since(today)
        epoch = secrets.token_hex(8)
        pipe = redis.pipeline(transaction=True)
        for account, balance in balances.items():
            pipe.hset(f"mw:{epoch}:a:{account}", "bal", balance)
        for key, tokens in used.items():
            pipe.set(f"mw:{epoch}:u:{today}:{key}", tokens, ex=2 * DAY_SECONDS)
        await pipe.execute()
        opening_ms = max(1, int((restart_opening if restarted else opening) * 1000))
        reply = await self._script(scripts.EPOCH_INSTALL)(args=[epoch, self._proc, run, adds, opening_ms])
        if reply[0] == "AGAIN" and reply[1] == "adds":
            log.warning("credits were added while the shared state was rebuilt; rebuilding it again")
            return Rebuilt(None, again=True)
        if reply[0] == "AGAIN":
            # Said at info: while a dead CLI's intent lapses (up to a minute) this repeats each round.
            log.info("an operator is changing credits while the shared state is rebuilt; rebuilding it again")
            return Rebuilt(None, again=True)
        if reply[0] != "OK":
            return Rebuilt(None, again=False)
        log.warning(
            "shared state rebuilt (epoch %s, %d accounts) in %.1fs",
            epoch,
            len(balances),
            time.monotonic() - started,
        )
        return Rebuilt(epoch, again=False)

    async def sweep(self) -> None:
        """Deletes the keys of epochs filed as old by EPOCH_INSTALL, a batch at a time (a rebuild
        forced without a Redis restart leaves O(accounts) of them). No script writes in an epoch
        that is not current, so nothing comes back."""
        redis = self._redis
        try:
            # decode_responses: one member as str, or None.
            while (found := await redis.srandmember("mw:epochs:old")) is not None:
                old = str(found)
                batch: list[str] = []
                async for key in redis.scan_iter(match=f"mw:{old}:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await redis.unlink(*batch)
                        batch = []
                if batch:
                    await redis.unlink(*batch)
                await redis.srem("mw:epochs:old", old)
        except (RedisError, OSError) as exc:
            # Left for the next rebuild's sweep: the epochs stay filed until their keys are gone.
            log.info("deleting the keys of old shared state epochs stopped (%s); resumed after the next rebuild", exc)
