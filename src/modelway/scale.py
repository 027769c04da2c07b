"""Running scaled out: N workers (with or without Envoy in front), and the CLI's word to Redis."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modelway.app import StartupError, check_ports
from modelway.config import Config, SharedConfig
from modelway.edge import Envoy
from modelway.shared import scripts
from modelway.shared.keys import announce_key_change
from modelway.shared.link import shared_client
from modelway.store import open_store
from modelway.store.base import CreditChange
from modelway.workers import WorkerPool, worker_config

__all__ = [
    "CreditStore",
    "SharedCreditChange",
    "Told",
    "check_worker_ports",
    "run_workers",
    "serve_workers",
    "shared_add_credits",
    "shared_keys_changed",
]

log = logging.getLogger(__name__)


class CreditStore(Protocol):
    """The store call a credit change makes (store.base.Store has it)."""

    async def add_credits(self, account_id: str, amount: int) -> CreditChange | None: ...


class Told(enum.Enum):
    """What running servers make of an operator's credit change (see shared_add_credits)."""

    NOW = "counted now"
    REBUILT = "counted once the shared state is rebuilt from the store (under way)"
    LAPSING = "counted within a minute, when the shared state is rebuilt from the store"
    UNTOLD = "counted when the shared state is next rebuilt from the store"
    REFUSED = "not made: Redis must hear of a removal"


@dataclass(frozen=True, slots=True)
class SharedCreditChange:
    """What the store changed (None: no such account, or nothing done) and what Redis made of it."""

    change: CreditChange | None
    told: Told


# How long Redis waits for the word after an operator's credit change is announced: longer than any
# store commit takes (PostgreSQL's command timeout is 30 s). Then the state is rebuilt from the store.
_INTENT_MS = 60_000
# A lost reply is asked again (the change's id makes that harmless): Redis answers what it did.
_TELL_TRIES = 3


async def shared_add_credits(
    config: SharedConfig, store: CreditStore, account_id: str, amount: int
) -> SharedCreditChange:
    """Changes an account's credits in the store and tells the servers' shared state in Redis.

    Redis hears of the change before the store commits it (an intent: no seed or rebuild takes the
    account's balance from the store meanwhile) and after (what the store applied). A removal Redis
    cannot hear of is not made: running servers would go on spending the removed credits. An add is
    made either way: credits Redis does not know of are never spent, only counted later.
    """
    client = shared_client(config)
    change_id = secrets.token_hex(8)
    try:
        try:
            await client.register_script(scripts.CREDIT_INTENT)(args=[account_id, change_id, _INTENT_MS])
            announced = True
        except (RedisError, OSError):
            announced = False
        if not announced and amount < 0:
            await _forget_intent(client, account_id, change_id)
            return SharedCreditChange(None, Told.REFUSED)
        # Not cancelled on a store failure: the commit may have happened (its acknowledgement lost);
        # the intent then lapses, and the state is rebuilt from the store.
        change = await store.add_credits(account_id, amount)
        if change is None:
            await _forget_intent(client, account_id, change_id)
            return SharedCreditChange(None, Told.NOW)
        told = await _tell(client, account_id, change, change_id)
        if told is None:
            return SharedCreditChange(change, Told.LAPSING if announced else Told.UNTOLD)
        return SharedCreditChange(change, Told.NOW if told == "OK" else Told.REBUILT)
    finally:
        await client.aclose()


async def _tell(client: aioredis.Redis, account_id: str, change: CreditChange, change_id: str) -> str | None:
    """CREDIT_ADD's answer, asked again after a lost reply; None if Redis never answered."""
    script = client.register_script(scripts.CREDIT_ADD)
    for attempt in range(_TELL_TRIES):
        try:
            reply = await script(args=[account_id, change.applied, change.after, change_id])
            return str(reply[0])
        except (RedisError, OSError):
            if attempt + 1 < _TELL_TRIES:
                await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def _forget_intent(client: aioredis.Redis, account_id: str, change_id: str) -> None:
    """Nothing was changed: the intent goes (else it lapses, and the state is rebuilt for nothing)."""
    with contextlib.suppress(RedisError, OSError):
        await client.zrem("mw:credit-intents", f"{account_id}|{change_id}")


async def shared_keys_changed(config: SharedConfig) -> bool:
    """Tells every server that keys changed in the store (the CLI wrote them)."""
    client = shared_client(config)
    try:
        return await announce_key_change(client, "cli")
    finally:
        await client.aclose()


def check_worker_ports(config: Config) -> None:
    """Every worker's gRPC and ops port is free (StartupError naming the first taken one)."""
    for index in range(config.server.workers):
        check_ports(worker_config(config, index).server, ("grpc_port", "ops_port"))


async def run_workers(
    config: Config,
    config_file: str,
    edge: Envoy | None = None,
    wait_ready: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Starts the workers, serves until SIGINT/SIGTERM/SIGHUP, then drains Envoy and stops them all.

    The drain order of one process holds for many: Envoy stops taking new
    connections first, then each worker (SIGTERM) drains its calls and
    writes its usage rows; Envoy is stopped by the caller after this returns.
    A second signal stops everything at once.
    """
    # The schema is made (or migrated) here once, before N workers would race to make it: SQLite can
    # refuse a concurrent schema change outright ("database is locked") instead of waiting for it.
    async with open_store(config.store):
        pass
    pool = WorkerPool(config, config_file)
    stopping = asyncio.Event()

    def on_signal() -> None:
        if not stopping.is_set():
            log.info(
                "shutting down %d workers: draining for up to %ss (a second signal exits at once)",
                config.server.workers,
                config.server.shutdown_grace_seconds,
            )
            stopping.set()
            return
        log.warning("second signal: stopping every worker at once")
        for pid in pool.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if edge is not None:
            edge.kill()
        os._exit(1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    pool.start()
    watcher = asyncio.create_task(pool.watch(), name="workers")
    try:
        waiting = asyncio.ensure_future(_ready(pool, wait_ready))
        signalled = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({waiting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        elif waiting.exception() is not None:
            raise StartupError(str(waiting.exception()))
        if on_ready is not None and not stopping.is_set():
            await on_ready()
        await stopping.wait()
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.drain)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        status = await pool.stop(config.server.shutdown_grace_seconds)
    return status


async def _ready(pool: WorkerPool, wait_ready: Callable[[], Awaitable[None]] | None) -> None:
    try:
        await pool.ready()
    except RuntimeError as exc:
        raise StartupError(str(exc)) from None
    if wait_ready is not None:
        await wait_ready()


async def serve_workers(config: Config, config_file: str) -> int:
    """`modelway serve --workers N`: the gRPC servers alone, on grpc_port .. grpc_port + N - 1."""
    check_worker_ports(config)
    return await run_workers(config, config_file)
