"""Running scaled out: N workers (with or without Envoy in front), and the CLI's word to Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from modelway.app import StartupError, check_ports
from modelway.config import Config, SharedConfig
from modelway.edge import Envoy
from modelway.shared import scripts
from modelway.shared.keys import announce_key_change
from modelway.shared.link import shared_client
from modelway.store import open_store
from modelway.store.base import CreditChange
from modelway.workers import WorkerPool, worker_config

__all__ = ["check_worker_ports", "run_workers", "serve_workers", "shared_credits_added", "shared_keys_changed"]

log = logging.getLogger(__name__)


async def shared_credits_added(config: SharedConfig, account_id: str, change: CreditChange) -> bool:
    """Tells Redis the credits the operator changed in the store (what the store applied, after its
    commit); whether running servers count them now. False: they count after the state is next
    rebuilt from the store (Redis unreachable, or being rebuilt: that rebuild then starts over)."""
    client = shared_client(config)
    try:
        script = client.register_script(scripts.CREDIT_ADD)
        reply = await script(args=[account_id, change.applied, change.after])
        return bool(reply[0] == "OK")
    except Exception:
        return False
    finally:
        await client.aclose()


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
