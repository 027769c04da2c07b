"""One process's link to the shared state in Redis: the connection, the epoch, what it holds, rebuilds.

How the balances survive a Redis restart (Redis is a cache; the store keeps
the balance of record, written with each usage row):

- Everything lives under an epoch id E named by the marker key `mw:epoch`.
  Every script checks it: a Redis that restarted empty has no marker, and
  every check-and-take is refused (503 SHARED_STATE_UNAVAILABLE, fail closed).
- Each process keeps, in its own memory, what it holds itself: credits
  reserved or charged and not yet written, tokens held by its calls under
  way. Before taking anything in epoch E it registers those amounts in E
  (absolute values, so registering twice is harmless).
- On a missing marker one process takes the lock `mw:rebuild`, waits
  `rebuild_quiet_seconds` (charges being written when Redis went away reach
  the store meanwhile; no new ones are written, because a write first moves
  its charges in Redis, which is refused), then reads every balance and
  today's tokens from the store, writes them under a new epoch and sets the
  marker. Every process then registers again, and calls go on.
- A charge leaves `held` for `bal` in Redis just before its row is written
  (and back, if the write fails, in the epoch it left in; in any later one
  it is simply held again). While its row is being written, registering in
  any other epoch counts it as held. A write that straddled a rebuild and took
  longer than half the quiet time may or may not be in what the rebuild
  read: the process then forces one more rebuild, which reads it for sure.
- Giving back (settling, refunding) never fails a call: it changes this
  process's memory first; if Redis cannot be told, the process registers its
  amounts again as soon as it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelway.config import SharedConfig
from modelway.core.budgets import DAY_SECONDS, day_start
from modelway.core.clock import Clock
from modelway.errors import GatewayError, Reason
from modelway.shared import scripts
from modelway.store.base import StoreUnavailable

__all__ = ["BalanceSource", "SharedLink", "shared_client"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Replies that mean "this process must (re)register, or the state must be rebuilt first".
_NOT_READY = frozenset({"NOEPOCH", "STALE", "UNREGISTERED"})
# How long a 503 tells the caller to wait: a rebuild or a reconnect takes a few seconds at most.
_RETRY_AFTER = 2.0
# How often the link looks at the marker while all is well (a restart is also noticed on the next call).
_CHECK_SECONDS = 1.0
_RETRY_SECONDS = 0.1
_MAX_CONNECTIONS = 64


class BalanceSource(Protocol):
    """What a rebuild reads from the store of record."""

    async def balances(self) -> dict[str, int]: ...

    async def tokens_since(self, since: float) -> dict[str, int]: ...


class _Gate:
    """Calls to Redis run side by side; registering runs alone (its snapshot of what this process
    holds must not miss a change whose script is on its way), and one registration at a time (a
    second one's snapshot, taken before the first ended, would miss what calls took in between,
    and its REGISTER, arriving after them, would drop it from Redis)."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._alone = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        # A woken waiter looks again: another registration may have closed the gate meanwhile.
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._alone:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


def _connecting_twice(base: type[aioredis.connection.AbstractConnection]) -> type[Any]:
    """`base` whose connect is tried twice: a connect that failed sent no command, so trying again
    is safe (commands themselves are never retried; see shared_client)."""

    class ConnectingTwice(base):  # type: ignore[valid-type,misc]
        async def connect(self) -> None:
            try:
                await super().connect()
            except (RedisConnectionError, RedisTimeoutError):
                await super().connect()

    return ConnectingTwice


def shared_client(config: SharedConfig) -> aioredis.Redis:
    # Short timeouts: a dead or wedged Redis refuses calls within a second, never hangs them.
    # No automatic retry: a script whose reply was slow may have run, and running it again would
    # count or take twice. A failed call is refused (503) and the link registers its holds again
    # (absolute amounts), which undoes whatever the unanswered script may have taken.
    # A burst of calls waits for one of _MAX_CONNECTIONS connections rather than opening one each;
    # longer than a call to Redis may take (a dead Redis is noticed by the calls that hold them).
    pool = aioredis.BlockingConnectionPool.from_url(
        config.redis_url,
        max_connections=_MAX_CONNECTIONS,
        timeout=max(2.0, 4 * config.timeout_seconds),
        socket_timeout=config.timeout_seconds,
        socket_connect_timeout=config.timeout_seconds,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=5,
    )
    pool.connection_class = _connecting_twice(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


class SharedLink:
    """The connection, the current epoch and this process's own holds; see the module's docstring."""

    def __init__(self, config: SharedConfig, store: BalanceSource, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.redis = shared_client(config)
        # Who this process is in Redis (its part of every held total is filed under this id).
        self.proc = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        # How scripts name the caller: the process and its registration's generation (one more with
        # each registration; a script still on its way under an older one does nothing, see scripts._GATE).
        self._generation = 0
        self.caller = f"{self.proc}#0"
        self._scripts: dict[str, AsyncScript] = {}
        # The epoch this process registered in; None while it has not (calls are refused meanwhile).
        self.epoch: str | None = None
        # What this process holds: micro-credits per account (reserved, or charged and not written)
        # and tokens per key (held by its calls under way).
        self.credits_held: Counter[str] = Counter()
        self.tokens_held: Counter[str] = Counter()
        # Charges whose rows are being written, per epoch they left `held` for `bal` in. A rebuild may
        # have read the store before their rows: in any other epoch they are registered as held.
        self.credits_moving: dict[str, Counter[str]] = {}
        self._dirty = False
        # Set when a charge write straddled an epoch change slowly: the epoch it began in.
        self._doubtful_since: str | None = None
        self._frozen = False
        self._gate = _Gate()
        self._catching_up = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._store_down = False
        self._reachable = True
        # A CREDIT_CHANGE that may or may not have run in this epoch: its balance cannot be trusted.
        self._moved_unsure: str | None = None
        self._failures_logged = False

    def script(self, source: str) -> AsyncScript:
        """The loaded script (EVALSHA; loaded again by redis-py after a Redis restart)."""
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.redis.register_script(source)
        return found

    async def start(self) -> None:
        """Registers (or rebuilds) now if Redis answers; either way keeps at it in the background."""
        with contextlib.suppress(RedisError, OSError):
            await self._sync()
        with contextlib.suppress(RedisError, OSError):
            await self._warn_if_persistent()
        if self.epoch is None:
            log.warning("shared state at %s is not ready yet; calls are refused until it is", self._config.shown_url)
        self._task = asyncio.create_task(self._maintain(), name="shared-state")

    async def close(self) -> None:
        for task in (self._task, self._sweeping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sweeping = None
        await self.redis.aclose()

    def freeze(self) -> None:
        """Shutting down with charges Redis was not told of: what it holds for us must stay as it is."""
        self._frozen = True

    @property
    def quiet_seconds(self) -> float:
        return self._config.rebuild_quiet_seconds

    @property
    def ready(self) -> bool:
        return self.epoch is not None

    def unavailable(self) -> GatewayError:
        return GatewayError(
            Reason.SHARED_STATE_UNAVAILABLE,
            "The gateway's shared limits and balances are unavailable for a moment; the call was not made. "
            "Please try again shortly.",
            retry_after=_RETRY_AFTER,
        )

    def _lost(self) -> None:
        self.epoch = None
        self._wake.set()

    def _unanswered(self, source: str, epoch: str | None) -> None:
        """A script was sent and no reply came (slow, cut off, or the call was cancelled): it may
        have run. What this process holds is registered again (absolute amounts: this undoes a take
        its memory does not know of); a balance change cannot be undone that way, so the state is
        rebuilt from the store if it may have run."""
        self._dirty = True
        if source == scripts.CREDIT_CHANGE and epoch is not None:
            self._moved_unsure = epoch
        self._wake.set()

    def _failed(self, exc: Exception) -> None:
        """An error the client was not expected to raise: the call is refused like any other failure."""
        if not self._failures_logged:
            self._failures_logged = True
            log.warning(
                "shared state call failed unexpectedly (%s: %s); refusing calls until it answers",
                type(exc).__name__,
                exc,
            )
        self._lost()

    async def take(self, source: str, args: Sequence[Any], on_ok: Callable[[list[Any]], None]) -> list[Any]:
        """A check-and-take: GatewayError 503 unless this process is registered in the current epoch
        and Redis answers. `on_ok` mirrors an accepted take in this process's memory."""
        for attempt in range(2):
            if self.epoch is None:
                self._wake.set()
                raise self.unavailable()
            async with self._gate.shared():
                epoch = self.epoch
                if epoch is None:
                    raise self.unavailable()
                try:
                    reply: list[Any] = await self.script(source)(args=[epoch, self.caller, *args])
                except asyncio.CancelledError:
                    self._unanswered(source, epoch)
                    raise
                except (RedisError, OSError) as exc:
                    self._unreachable(exc)
                    self._unanswered(source, epoch)
                    raise self.unavailable() from None
                except Exception as exc:
                    self._failed(exc)
                    self._unanswered(source, epoch)
                    raise self.unavailable() from None
                if reply[0] == "OK":
                    on_ok(reply)
                if reply[0] not in _NOT_READY:
                    return reply
            if reply[0] == "NOEPOCH" or attempt:
                self._lost()
                raise self.unavailable()
            # Redis was rebuilt (by another process) since this one registered: register now, once.
            await self._catch_up(epoch)
        raise AssertionError("unreachable")

    async def _catch_up(self, stale: str) -> None:
        async with self._catching_up:
            if self.epoch != stale:
                return  # another call registered meanwhile
            try:
                # Registers only: a rebuild (a few seconds) is the background task's, never a call's.
                await self._sync(rebuild=False)
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
                raise self.unavailable() from None

    async def give(
        self, source: str, args: Sequence[Any], apply: Callable[[list[Any] | None], T], *, epoch: str | None = None
    ) -> T:
        """A give-back, which never fails: `apply` gets Redis's reply, or None when Redis could not be
        told (the process then registers its holds again as soon as it can). `epoch`: the one epoch
        the give-back belongs in (default: the current one); in any other Redis refuses it (None)."""
        async with self._gate.shared():
            current = self.epoch
            epoch = current if epoch is None else epoch
            reply: list[Any] | None = None
            try:
                if epoch is not None:
                    reply = await self.script(source)(args=[epoch, self.caller, *args])
                    if reply[0] in _NOT_READY:
                        if epoch == current:
                            self._lost()
                        reply = None
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
            except Exception as exc:
                self._failed(exc)
            finally:
                # Also when the caller is cancelled meanwhile: memory changes, whatever Redis heard.
                if reply is None:
                    self._unanswered(source, epoch)
                result = apply(reply)
            return result

    def doubt(self, epoch: str) -> None:
        """A charge write that began in `epoch` took long: if a rebuild ran meanwhile, it may have
        missed the charge, so the state is rebuilt once more (decided by the next look at the marker)."""
        self._doubtful_since = epoch
        self._wake.set()

    def _unreachable(self, exc: BaseException) -> None:
        if self._reachable:
            # redis-py's messages name the host and port, never the password.
            log.warning(
                "shared state at %s unreachable (%s: %s); refusing calls until it answers",
                self._config.shown_url,
                type(exc).__name__,
                exc,
            )
            self._reachable = False
        self._lost()

    async def _maintain(self) -> None:
        while True:
            try:
                if not self._reachable:
                    # Idle pooled connections to a Redis that went away are dead: without retries each
                    # would fail one call (or the rebuild's next step) before reconnecting.
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
                await self._sync()
                if not self._reachable:
                    log.info("shared state at %s answers again", self._config.shown_url)
                    self._reachable = True
                self._store_down = False
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
            except StoreUnavailable:
                # A rebuild could not read the store (PostgreSQL down): retried, and said once per outage.
                if not self._store_down:
                    self._store_down = True
                    log.warning("shared state cannot be rebuilt while the store is unreachable; retrying")
            except Exception:
                log.exception("shared state upkeep failed")
            healthy = self.epoch is not None and not self._dirty
            # Often enough that this process's alive key never lapses while it runs.
            check = min(_CHECK_SECONDS, self._config.process_timeout_seconds / 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), check if healthy else _RETRY_SECONDS)
            self._wake.clear()

    async def _warn_if_persistent(self) -> None:
        # CONFIG may be renamed away (managed Redis): then nothing is said.
        save = (await self.redis.config_get("save")).get("save")
        appendonly = (await self.redis.config_get("appendonly")).get("appendonly")
        if save or appendonly == "yes":
            log.warning(
                "Redis at %s persists its data (save %r, appendonly %s); that is not needed: after a "
                "restart from a snapshot the gateway notices the new run id and rebuilds the state from the "
                "store (calls refused for a few seconds)",
                self._config.shown_url,
                save,
                appendonly,
            )

    async def _run_id(self) -> str:
        info: dict[str, Any] = await self.redis.info("server")
        return str(info["run_id"])

    async def _sync(self, *, rebuild: bool = True) -> None:
        # decode_responses: str, never bytes.
        marks: list[str | None] = await self.redis.mget("mw:epoch", "mw:epoch:run")  # type: ignore[assignment]
        current, marked_run = marks
        if current is not None and marked_run != await self._run_id():
            # The marker outlived a restart (Redis loaded a snapshot or its AOF): the balances and
            # holds are those of the snapshot, not of the store now. Rebuilt like an empty Redis.
            log.warning("Redis restarted from a snapshot (new run id); rebuilding the shared state from the store")
            await self.script(scripts.EPOCH_FORCE)(args=[current])
            current = None
        doubtful = self._doubtful_since
        if doubtful is not None and current is not None:
            # Still the epoch the write began in: no rebuild ran meanwhile. Otherwise the rebuild that
            # made `current` may have read the store before the write ended: one more, after it.
            # (No marker: wait for the rebuild under way, then judge it.)
            self._doubtful_since = None
            if current != doubtful:
                log.warning("a charge was written while the shared state was rebuilt; rebuilding it again")
                await self.script(scripts.EPOCH_FORCE)(args=[current])
                current = None
        unsure = self._moved_unsure
        if unsure is not None and current is not None:
            self._moved_unsure = None
            if current == unsure:
                log.warning("a balance change in Redis went unanswered; rebuilding the shared state from the store")
                await self.script(scripts.EPOCH_FORCE)(args=[current])
                current = None
        if current is None:
            self.epoch = None
            if not rebuild:
                self._wake.set()
                return
            lock_ms = int((self._config.rebuild_quiet_seconds + 10) * 1000)
            if await self.redis.set("mw:rebuild", self.proc, nx=True, px=lock_ms):
                await self._rebuild()
            return
        if (current != self.epoch or self._dirty) and not self._frozen:
            await self._register(current)
        if current == self.epoch:
            await self._alive(current)
            reply = await self.script(scripts.REAP)(args=[current])
            if reply[0] == "REBUILD":
                log.warning(
                    "server process %s stopped holding credits; rebuilding the shared state from the store", reply[1]
                )
            elif reply[0] == "LAPSED":
                log.warning(
                    "an operator's credit change (%s) never reached Redis; rebuilding the shared state from the store",
                    reply[1],
                )
            elif reply[0] == "OK" and int(reply[1]):
                log.warning("released what %d stopped server process(es) held", int(reply[1]))

    async def _alive(self, epoch: str) -> None:
        # Read by REAP in every other process: this one has not crashed.
        ttl_ms = int(self._config.process_timeout_seconds * 1000)
        await self.redis.set(f"mw:{epoch}:alive:{self.proc}", 1, px=ttl_ms)

    async def _register(self, epoch: str) -> None:
        async with self._gate.alone():
            held = Counter(self.credits_held)
            for moved_in, moving in self.credits_moving.items():
                if moved_in != epoch:
                    held.update({account: amount for account, amount in moving.items() if amount > 0})
            accounts = [(a, n) for a, n in held.items() if n]
            keys = [(k, n) for k, n in self.tokens_held.items() if n]
            self._generation += 1
            caller = f"{self.proc}#{self._generation}"
            args: list[Any] = [epoch, caller, len(accounts)]
            for name, amount in (*accounts, *keys):
                args += [name, amount]
            self._dirty = False
            try:
                await self._alive(epoch)  # before registering: never reaped between the two
                reply = await self.script(scripts.REGISTER)(args=args)
            except BaseException:
                self._dirty = True
                raise
            if reply[0] == "OK":
                if self.epoch != epoch:
                    log.info("shared state: registered in epoch %s", epoch)
                self.epoch, self.caller = epoch, caller
            else:
                self._dirty = True
                self.epoch = None

    async def _rebuild(self) -> None:
        """This process holds the rebuild lock: the state is read from the store under a new epoch."""
        quiet = self._config.rebuild_quiet_seconds
        log.warning(
            "shared state has no marker (Redis restarted or was flushed): rebuilding it from the store "
            "after %.1fs; calls are refused meanwhile",
            quiet,
        )
        started = time.monotonic()
        try:
            await self._rebuild_after(quiet, started)
        except BaseException:
            # Let the next try (this process's or another's) start at once, not when the lock expires.
            with contextlib.suppress(Exception):
                await self.script(scripts.REBUILD_GIVE_UP)(args=[self.proc])
            raise

    async def _rebuild_after(self, quiet: float, started: float) -> None:
        await asyncio.sleep(quiet)
        # Connections left idle since before a restart would fail the steps below one by one.
        await self.redis.connection_pool.disconnect(inuse_connections=False)
        # Read before the store: an operator's credits added while no epoch stood bump it (see
        # scripts.CREDIT_ADD); a bump after this read may be missing from what is read next.
        adds = await self.redis.get("mw:credit-adds") or "0"
        run_id = await self._run_id()
        balances = await self._store.balances()
        today = day_start(self._clock.now())
        used = await self._store.tokens_since(today)
        epoch = secrets.token_hex(8)
        pipe = self.redis.pipeline(transaction=True)
        for account, balance in balances.items():
            pipe.hset(f"mw:{epoch}:a:{account}", "bal", balance)
        for key, tokens in used.items():
            pipe.set(f"mw:{epoch}:u:{today}:{key}", tokens, ex=2 * DAY_SECONDS)
        await pipe.execute()
        reply = await self.script(scripts.EPOCH_INSTALL)(args=[epoch, self.proc, run_id, adds])
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.create_task(self._sweep(), name="shared-state-sweep")
        if reply[0] == "AGAIN":
            log.warning("credits were added while the shared state was rebuilt; rebuilding it again")
            self._wake.set()
        if reply[0] == "OK":
            log.warning(
                "shared state rebuilt (epoch %s, %d accounts) in %.1fs",
                epoch,
                len(balances),
                time.monotonic() - started,
            )
            await self._register(epoch)

    async def _sweep(self) -> None:
        """Deletes the keys of epochs filed as old by EPOCH_INSTALL, a batch at a time (a rebuild
        forced without a Redis restart leaves O(accounts) of them). No script writes in an epoch
        that is not current, so nothing comes back."""
        try:
            # decode_responses: one member as str, or None.
            while (found := await self.redis.srandmember("mw:epochs:old")) is not None:
                old = str(found)
                batch: list[str] = []
                async for key in self.redis.scan_iter(match=f"mw:{old}:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await self.redis.unlink(*batch)
                        batch = []
                if batch:
                    await self.redis.unlink(*batch)
                await self.redis.srem("mw:epochs:old", old)
        except (RedisError, OSError) as exc:
            # Left for the next rebuild's sweep: the epochs stay filed until their keys are gone.
            log.info("deleting the keys of old shared state epochs stopped (%s); resumed after the next rebuild", exc)

    async def seed(self, account_id: str) -> None:
        """Tells Redis the balance of an account created after the last rebuild (from the store)."""
        epoch = self.epoch
        if epoch is None:
            raise self.unavailable()
        balance = (await self._store.balances()).get(account_id, 0)
        try:
            await self.script(scripts.CREDIT_SEED)(args=[epoch, account_id, balance])
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            raise self.unavailable() from None
