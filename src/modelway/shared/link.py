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

What a failure costs depends on what it says about Redis:

- No free connection in time (the pool is exhausted) or BUSY (Redis refused
  to run it): nothing was sent or run, so only that call is refused.
- A reply slower than `timeout_seconds`: the script was sent and may run
  (now or later). That call is refused and the process is marked dirty: as
  soon as Redis answers again it settles a balance move whose reply it lost
  (CREDIT_RECONCILE, by the move's id), then registers its holds and counts
  under a new generation (absolute amounts: that undoes a take its memory
  does not know of; a script of an older generation that reaches Redis
  later does nothing). The epoch stands: the next call is admitted as soon
  as Redis answers.
- A lost connection (refused, reset: Redis restarted or went away): the
  epoch is dropped, and calls are refused until the process has checked the
  marker (and Redis's run id) and registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from modelway.config import SharedConfig
from modelway.core.budgets import DAY_SECONDS, day_start
from modelway.core.clock import Clock
from modelway.core.limits import WINDOW_SECONDS
from modelway.errors import GatewayError, Reason
from modelway.shared import scripts
from modelway.shared.rebuild import Rebuilder, run_id
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
    """What a rebuild (all balances) and a seed (one account's) read from the store of record."""

    async def balances(self) -> dict[str, int]: ...

    async def balance(self, account_id: str) -> int | None: ...

    async def tokens_since(self, since: float) -> dict[str, int]: ...


def _never_ran(exc: BaseException) -> bool:
    """A failure that sent nothing or ran nothing: no free pooled connection in time, or Redis
    answered BUSY (a script of someone else's runs too long). Only the call at hand is refused."""
    if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError):
        return True  # BlockingConnectionPool: "No connection available."
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSY")


@dataclass(frozen=True, slots=True)
class _UnsureMove:
    """A script carrying an operation id (`source`: CREDIT_CHANGE, a balance move, or BUDGET_SETTLE)
    sent in `epoch` whose reply never came; `done`: whether this process's memory counts it as made
    (a give-back) or not (a take)."""

    source: str
    epoch: str
    args: tuple[Any, ...]
    done: bool


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

    def shared(self) -> _Gate:
        """`async with gate.shared()`: a call to Redis, beside the others. The gate is its own
        context manager (a generator's would cost each call to Redis its making and driving)."""
        return self

    async def __aenter__(self) -> None:
        # A woken waiter looks again: another registration may have closed the gate meanwhile.
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()

    async def __aexit__(self, *exc_info: object) -> None:
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


def _connection_class(base: type[aioredis.connection.AbstractConnection]) -> type[Any]:
    """`base` whose connect is tried twice: a connect that failed sent no command, so trying again
    is safe (commands themselves are never retried; see shared_client).

    Its commands are packed by hiredis (pinned in pyproject, as redis-py is) with redis-py's own
    packer for its synchronous client: the asynchronous one packs each argument in Python, some 4,200
    of a call's 30,300 Python bytecodes when the state is shared (README, "Performance"). hiredis
    encodes text as UTF-8 whatever the URL's `encoding`: what we send is ids and numbers."""
    packer = HiredisRespSerializer() if HIREDIS_AVAILABLE else None

    class Connection(base):  # type: ignore[valid-type,misc]
        async def connect(self) -> None:
            try:
                await super().connect()
            except (RedisConnectionError, RedisTimeoutError):
                await super().connect()

        if packer is not None:

            def pack_command(self, *args: Any) -> list[bytes]:
                packed: list[bytes] = packer.pack(*args)
                return packed

    return Connection


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
        # Connecting sends nothing, so waiting longer for it risks nothing but latency: a burst of
        # new connections on a loaded machine takes longer than one reply (Redis down refuses at once).
        socket_connect_timeout=max(1.0, config.timeout_seconds),
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=5,
    )
    pool.connection_class = _connection_class(pool.connection_class)
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
        self._rebuilder = Rebuilder(self.redis, store, clock, config, self.proc, self.script)
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
        # Requests this process counted per rate-limit scope in the minute window `rate_window`
        # (registered again after Redis lost its counters).
        self.rate_window = 0
        self.rates_counted: Counter[str] = Counter()
        # Scopes of unanswered rate-limit takes this minute: registered too (with what memory counted,
        # maybe nothing), which undoes a count Redis made for a call that was refused.
        self._rates_unsure: set[str] = set()
        # Tokens per key of this process's usage rows not yet written to the store, for a day:
        # a rebuild reads the day's use from the store, which lacks them (set by the usage writer).
        self._unwritten: Callable[[float], Mapping[str, int]] = lambda since: {}
        # Balance moves and budget settles whose reply never came, settled before the next registration.
        self._unsure_moves: list[_UnsureMove] = []
        # The epoch this process last registered in (kept while `epoch` is None: a budget settle
        # refused meanwhile belongs there).
        self._registered_in: str | None = None
        # One store read per account being seeded, whatever the number of its first calls.
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self._slow_logged = False
        # When (monotonic) the current epoch opens for takes (see opening_seconds).
        self._opens_at = 0.0
        # Charges whose rows are being written, per epoch they left `held` for `bal` in. A rebuild may
        # have read the store before their rows: in any other epoch they are registered as held.
        self.credits_moving: dict[str, Counter[str]] = {}
        self._dirty = False
        # Set when a charge write straddled an epoch change slowly: the epoch it began in.
        self._doubtful_since: str | None = None
        self._frozen = False
        self._gate = _Gate()
        self._catching_up = asyncio.Lock()
        # The one re-registration the calls arriving after an unanswered script wait on together.
        self._stepping: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._store_down = False
        self._reachable = True
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
        if self.epoch is not None:
            # A server ready to serve can take: a state it just rebuilt opens after the other processes
            # registered in it (a fraction of a second).
            await asyncio.sleep(max(0.0, self._opens_at - time.monotonic()))
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
        """Registered in the current epoch, and the epoch is open for takes."""
        return self.epoch is not None and time.monotonic() >= self._opens_at

    @property
    def opening_seconds(self) -> float:
        """How long a rebuilt epoch takes nothing, so that the live processes register in it first
        (their holds, their minute's counts, their unwritten tokens): a process whose event loop and
        link keep up notices a missing marker within _CHECK_SECONDS (the rebuild's quiet time counts
        towards that), then looks for the new one every _RETRY_SECONDS. That is a time, not a check:
        a process stalled longer than it (a blocked event loop, a slow link, another host's lag)
        registers after takes began, and what it reserved may have been spent by others meanwhile
        (it says so when it registers: see _register)."""
        return max(0.0, _CHECK_SECONDS - self._config.rebuild_quiet_seconds) + 3 * _RETRY_SECONDS

    @property
    def restart_opening_seconds(self) -> float:
        """The opening after Redis restarted (empty, or from a snapshot): the other processes learn it
        from a failed call or their next check, then reconnect (up to a reply's timeout) first."""
        return max(_CHECK_SECONDS, self.opening_seconds) + self._config.timeout_seconds

    @property
    def op_seconds(self) -> int:
        """How long Redis remembers an operation id: from the script's run until the process's next
        registration settles it (a process away longer than process_timeout_seconds is reaped, and
        registers all it holds afresh)."""
        return int(max(60.0, 3 * self._config.process_timeout_seconds))

    @property
    def in_step(self) -> bool:
        """Registered in the current epoch with nothing left to settle (no unanswered script)."""
        return self.epoch is not None and not self._dirty and not self._unsure_moves

    def count_unwritten(self, unwritten: Callable[[float], Mapping[str, int]]) -> None:
        """Where the process learns the tokens per key of its usage rows not yet written since a moment."""
        self._unwritten = unwritten

    def counted(self, window: int, scopes: Sequence[str]) -> None:
        """A rate-limit take was admitted: mirrored here (called inside the take, as Redis answered)."""
        if window < self.rate_window:
            return  # a slow take of the minute before: only the current minute is ever registered
        if window > self.rate_window:
            self.rate_window = window
            self.rates_counted.clear()
            self._rates_unsure.clear()
        for scope in scopes:
            self.rates_counted[scope] += 1

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

    def _unanswered(self, source: str, epoch: str | None, args: Sequence[Any], *, done: bool) -> None:
        """A script was sent and no reply came (slow, cut off, or the call was cancelled): it may
        have run, or run later. What this process holds is registered again (absolute amounts: this
        undoes a take its memory does not know of); a balance move is settled by its id instead
        (registering cannot undo it): made if memory counts it as made, undone otherwise."""
        self._dirty = True
        if source == scripts.CALL_SETTLE:
            # Its tokens are settled as a BUDGET_SETTLE's (the same first arguments, the same id); its
            # credits, as every give-back's, by the registration that follows.
            source, args = scripts.BUDGET_SETTLE, args[: scripts.BUDGET_SETTLE_ARGS]
        if source == scripts.BUDGET_SETTLE and epoch is None:
            # Never sent (no epoch stood): the day's use of the epoch it would have gone to lacks it.
            epoch = self._registered_in
        if source in (scripts.CREDIT_CHANGE, scripts.BUDGET_SETTLE) and epoch is not None:
            self._unsure_moves.append(_UnsureMove(source, epoch, tuple(args), done))
        if source == scripts.RATE_ACQUIRE:
            self.counted(args[0], ())  # the first take of a new minute may be the unanswered one
            if args[0] == self.rate_window:
                self._rates_unsure.update(args[2::2])
        self._wake.set()

    def _refused(self, exc: Exception, source: str, epoch: str | None, args: Sequence[Any], *, done: bool) -> None:
        """What a failed script call says about Redis (see the module's docstring)."""
        if _never_ran(exc):
            self._say_slow(exc)
            return
        self._unanswered(source, epoch, args, done=done)
        if isinstance(exc, RedisTimeoutError):
            self._say_slow(exc)
        elif isinstance(exc, (RedisError, OSError)):
            self._unreachable(exc)
        else:
            self._failed(exc)

    @contextlib.contextmanager
    def _refused_if_unanswered(self) -> Iterator[None]:
        """Redis slow or unreachable, for a call waiting on it: said (once), and the call refused (503)."""
        try:
            yield
        except RedisTimeoutError as exc:
            self._say_slow(exc)
            raise self.unavailable() from None
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            raise self.unavailable() from None

    def _say_slow(self, exc: BaseException) -> None:
        if not self._slow_logged:
            self._slow_logged = True
            log.warning(
                "shared state at %s is slow (%s: %s); calls it does not answer within %ss are refused",
                self._config.shown_url,
                type(exc).__name__,
                exc,
                self._config.timeout_seconds,
            )

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
        if not self.in_step and self.epoch is not None:
            # A script went unanswered: what it may have taken is undone before anything more is taken,
            # so that the next call after Redis answers again sees exact amounts.
            await self._step_in()
        for attempt in range(2):
            if self.epoch is None:
                self._wake.set()
                raise self.unavailable()
            if time.monotonic() < self._opens_at:
                raise self.unavailable()  # a rebuilt state, while the other processes register in it
            async with self._gate.shared():
                epoch = self.epoch
                if epoch is None:
                    raise self.unavailable()
                try:
                    reply: list[Any] = await self.script(source)(args=[epoch, self.caller, *args])
                except asyncio.CancelledError:
                    self._unanswered(source, epoch, args, done=False)
                    raise
                except Exception as exc:
                    self._refused(exc, source, epoch, args, done=False)
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
            await self._register_for_a_call()

    async def _register_for_a_call(self) -> None:
        """Looks at the marker and registers, for a call waiting on it: a failure refuses the call (503).
        Registers only: a rebuild (a few seconds) is the background task's, never a call's."""
        with self._refused_if_unanswered():
            await self._sync(rebuild=False)

    async def _step_in(self) -> None:
        # Single-flight: while Redis is slow, the calls arriving meanwhile share one try (and its
        # refusal) rather than each waiting its turn for a timeout of its own.
        running = self._stepping
        if running is None:
            running = self._stepping = asyncio.ensure_future(self._step_in_once())
            running.add_done_callback(self._stepped)
        await asyncio.shield(running)

    def _stepped(self, done: asyncio.Future[None]) -> None:
        self._stepping = None
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone away meanwhile

    async def _step_in_once(self) -> None:
        if self.in_step or self.epoch is None:
            return  # done meanwhile, or the epoch is gone (the take refuses)
        await self._register_for_a_call()

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
            failure: Exception | None = None
            try:
                if epoch is not None:
                    reply = await self.script(source)(args=[epoch, self.caller, *args])
                    if reply[0] in _NOT_READY:
                        if epoch == current:
                            self._lost()
                        reply = None
                    elif reply[0] == "DONE":
                        # A copy of a settle already counted (by its reconcile) moved nothing: as for an
                        # unanswered one, the registration that follows sets what this process holds.
                        reply = None
            except Exception as exc:
                failure = exc
            finally:
                # Also when the caller is cancelled meanwhile: memory changes, whatever Redis heard.
                if reply is None:
                    if failure is not None and not _never_ran(failure):
                        self._refused(failure, source, epoch, args, done=True)
                    else:
                        self._unanswered(source, epoch, args, done=True)
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
            failed = True
            try:
                if not self._reachable:
                    # Idle pooled connections to a Redis that went away are dead: without retries each
                    # would fail one call (or the rebuild's next step) before reconnecting.
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
                await self._sync()
                failed = False
                if not self._reachable or self._slow_logged:
                    log.info("shared state at %s answers again", self._config.shown_url)
                    self._reachable, self._slow_logged = True, False
                self._store_down = False
            except RedisTimeoutError as exc:
                # Slow is not gone: the epoch stands, and the next round registers what is dirty.
                self._say_slow(exc)
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
            except StoreUnavailable:
                # A rebuild could not read the store (PostgreSQL down): retried, and said once per outage.
                if not self._store_down:
                    self._store_down = True
                    log.warning("shared state cannot be rebuilt while the store is unreachable; retrying")
            except Exception:
                log.exception("shared state upkeep failed")
            if failed or not self.in_step:
                # Tried again after a pause however often it is woken: a failed round wakes it itself
                # (`_lost`), as does every call refused meanwhile, and a refused connection fails in
                # microseconds, so waiting for a wake-up here would spin a core while Redis is down.
                await asyncio.sleep(_RETRY_SECONDS)
            else:
                # Often enough that this process's alive key never lapses while it runs.
                check = min(_CHECK_SECONDS, self._config.process_timeout_seconds / 3)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), check)
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

    async def _sync(self, *, rebuild: bool = True) -> None:
        # decode_responses: str, never bytes.
        marks: list[str | None] = await self.redis.mget("mw:epoch", "mw:epoch:run")  # type: ignore[assignment]
        current, marked_run = marks
        if current is not None and marked_run != await run_id(self.redis):
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

    async def _settle_moves(self, current: str) -> None:
        """Balance moves and budget settles whose reply never came: made or undone, as memory counts
        them, by their id. Run after this round's first reply from Redis: a script sent before it was
        run (or dropped with its connection) by then, and a copy still on its way finds it settled."""
        while self._unsure_moves:
            move = self._unsure_moves[0]
            if move.epoch == current and move.source == scripts.BUDGET_SETTLE:
                key, day, _held, used, day_ttl, op, op_ttl = move.args
                await self.script(scripts.BUDGET_RECONCILE)(args=[current, op, op_ttl, key, day, used, day_ttl])
            elif move.epoch == current:
                op, sign, *pairs = move.args
                await self.script(scripts.CREDIT_RECONCILE)(
                    args=[current, self.proc, op, sign, 1 if move.done else 0, *pairs]
                )
            # Another epoch: its rebuild read the balances and the day's use from the store (and the
            # rows not written yet, from the first registration of each process); nothing to settle.
            self._unsure_moves.pop(0)

    async def _alive(self, epoch: str) -> None:
        # Read by REAP in every other process: this one has not crashed.
        ttl_ms = int(self._config.process_timeout_seconds * 1000)
        await self.redis.set(f"mw:{epoch}:alive:{self.proc}", 1, px=ttl_ms)

    async def _register(self, epoch: str) -> None:
        # Alone (no call under way) and one at a time (the gate's lock): the upkeep and calls stepping
        # in may both ask, and a second snapshot taken before the first REGISTER ended would miss what
        # calls took in between.
        async with self._gate.alone():
            # Before REGISTER: a settled move changes this process's part, which REGISTER then sets.
            await self._settle_moves(epoch)
            held = Counter(self.credits_held)
            for moved_in, moving in self.credits_moving.items():
                if moved_in != epoch:
                    held.update({account: amount for account, amount in moving.items() if amount > 0})
            accounts = [(a, n) for a, n in held.items() if n]
            keys = [(k, n) for k, n in self.tokens_held.items() if n]
            unsure, self._rates_unsure = self._rates_unsure, set()
            rates = [(scope, self.rates_counted[scope]) for scope in {*self.rates_counted, *unsure}]
            today = day_start(self._clock.now())
            unwritten = [(k, n) for k, n in self._unwritten(today).items() if n]
            self._generation += 1
            caller = f"{self.proc}#{self._generation}"
            args: list[Any] = [epoch, caller, self.rate_window, 2 * WINDOW_SECONDS, today, 2 * DAY_SECONDS]
            args += [len(accounts), len(keys), len(rates)]
            for name, amount in (*accounts, *keys, *rates, *unwritten):
                args += [name, amount]
            self._dirty = False
            try:
                await self._alive(epoch)  # before registering: never reaped between the two
                reply = await self.script(scripts.REGISTER)(args=args)
            except BaseException:
                self._dirty = True
                self._rates_unsure |= unsure
                raise
            if reply[0] == "OK":
                if self.epoch != epoch:
                    log.info("shared state: registered in epoch %s", epoch)
                if int(reply[2]) and int(reply[1]) < 0 and accounts:
                    # First here, after the opening closed, with credits reserved: the epoch was taking
                    # meanwhile without them, so others may have spent them (see opening_seconds).
                    log.warning(
                        "registered in the rebuilt shared state %s after its opening closed, with credits held "
                        "on %d account(s): other processes may have spent them meanwhile",
                        epoch,
                        len(accounts),
                    )
                self._opens_at = time.monotonic() + max(0, int(reply[1])) / 1000
                self.epoch, self.caller, self._registered_in = epoch, caller, epoch
            else:
                self._dirty = True
                self._rates_unsure |= unsure
                self.epoch = None

    async def _rebuild(self) -> None:
        """This process holds the rebuild lock: the state is read from the store under a new epoch."""
        rebuilt = await self._rebuilder.run(self.opening_seconds, self.restart_opening_seconds)
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.create_task(self._rebuilder.sweep(), name="shared-state-sweep")
        if rebuilt.again:
            self._wake.set()
        if rebuilt.epoch is not None:
            await self._register(rebuilt.epoch)

    async def seed(self, account_id: str) -> None:
        """Tells Redis the balance of an account created after the last rebuild (one row read from
        the store). Single-flight: the first calls of a new account, arriving together, share one
        read and one script."""
        running = self._seeding.get(account_id)
        if running is None:
            running = self._seeding[account_id] = asyncio.ensure_future(self._seed(account_id))
            running.add_done_callback(functools.partial(self._seeded, account_id))
        # Shielded: a caller that goes away leaves the seed to the others waiting on it.
        await asyncio.shield(running)

    def _seeded(self, account_id: str, done: asyncio.Future[None]) -> None:
        self._seeding.pop(account_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone away meanwhile

    async def _seed(self, account_id: str) -> None:
        epoch = self.epoch
        if epoch is None:
            raise self.unavailable()
        balance = await self._store.balance(account_id) or 0
        with self._refused_if_unanswered():
            reply = await self.script(scripts.CREDIT_SEED)(args=[epoch, account_id, balance])
        if reply[0] != "OK":
            # BUSY: the operator is changing this account's credits (the store read may miss them), and
            # their word sets the balance; STALE: rebuilt meanwhile. Refused for a moment either way.
            raise self.unavailable()
