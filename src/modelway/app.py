"""Wiring and lifecycle: builds every part from the configuration, serves, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from modelway.config import Config, ServerConfig
from modelway.core.access import Gate
from modelway.core.accounting import UsageRecorder
from modelway.core.breaker import Breakers
from modelway.core.budgets import TokenBudgets, day_start
from modelway.core.catalog import Catalog
from modelway.core.clock import Clock, SystemClock
from modelway.core.directory import Directory
from modelway.core.image_files import ImageFiles
from modelway.core.key_admin import KeyAdmin
from modelway.core.ledger import Ledger
from modelway.core.limits import RateLimiter
from modelway.core.metering import HoldsInTurn, Metering
from modelway.core.pipeline import Pipeline
from modelway.core.reports import UsageReports
from modelway.core.router import Router
from modelway.core.routing import Resolver
from modelway.core.state import CallHolds, RateLimits, RecordedLedger
from modelway.edge import Envoy
from modelway.ops import OpsServer, Readiness, Telemetry
from modelway.providers.http import Transport
from modelway.providers.registry import ProviderRegistry
from modelway.services.catalog import CatalogRestServicer, CatalogServicer
from modelway.services.chat import ChatRestServicer, ChatServicer
from modelway.services.conversations import ChatSend, ConversationsRestServicer, ConversationsServicer
from modelway.services.gemini import GeminiRestServicer, GeminiServicer
from modelway.services.images import Gallery, ImagesRestServicer, ImagesServicer
from modelway.services.keys import KeysRestServicer, KeysServicer
from modelway.services.methods import MethodTable
from modelway.services.models import ModelsServicer
from modelway.services.native import AiRestServicer, GenerateServicer
from modelway.services.reflection import enable_reflection
from modelway.services.usage import UsageServicer
from modelway.shared import SharedState, open_shared_state
from modelway.shared.state import SharedBudgets
from modelway.store import StoreUnavailable, open_store
from modelway.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    gemini_pb2,
    gemini_pb2_grpc,
    generate_pb2,
    generate_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from modelway.v1.rest import ai_pb2 as ai_rest_pb2
from modelway.v1.rest import ai_pb2_grpc as ai_rest_pb2_grpc
from modelway.v1.rest import catalog_pb2 as catalog_rest_pb2
from modelway.v1.rest import catalog_pb2_grpc as catalog_rest_pb2_grpc
from modelway.v1.rest import chat_pb2 as chat_rest_pb2
from modelway.v1.rest import chat_pb2_grpc as chat_rest_pb2_grpc
from modelway.v1.rest import conversations_pb2 as conversations_rest_pb2
from modelway.v1.rest import conversations_pb2_grpc as conversations_rest_pb2_grpc
from modelway.v1.rest import gemini_pb2 as gemini_rest_pb2
from modelway.v1.rest import gemini_pb2_grpc as gemini_rest_pb2_grpc
from modelway.v1.rest import images_pb2 as images_rest_pb2
from modelway.v1.rest import images_pb2_grpc as images_rest_pb2_grpc
from modelway.v1.rest import keys_pb2 as keys_rest_pb2
from modelway.v1.rest import keys_pb2_grpc as keys_rest_pb2_grpc
from modelway.workers import SUPERVISOR_PID, outlive_no_supervisor

__all__ = [
    "Gateway",
    "StartupError",
    "check_ports",
    "freeze_startup_heap",
    "loop_factory",
    "run",
    "run_serving",
    "serve",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SERVICES = (
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelsService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeysService"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    chat_rest_pb2.DESCRIPTOR.services_by_name["ChatRestService"].full_name,
    keys_rest_pb2.DESCRIPTOR.services_by_name["KeysRestService"].full_name,
    gemini_pb2.DESCRIPTOR.services_by_name["GeminiService"].full_name,
    gemini_rest_pb2.DESCRIPTOR.services_by_name["GeminiRestService"].full_name,
    generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name,
    ai_rest_pb2.DESCRIPTOR.services_by_name["AiRestService"].full_name,
    images_pb2.DESCRIPTOR.services_by_name["ImagesService"].full_name,
    images_rest_pb2.DESCRIPTOR.services_by_name["ImagesRestService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    catalog_rest_pb2.DESCRIPTOR.services_by_name["CatalogRestService"].full_name,
    conversations_pb2.DESCRIPTOR.services_by_name["ConversationsService"].full_name,
    conversations_rest_pb2.DESCRIPTOR.services_by_name["ConversationsRestService"].full_name,
)


# After the grace period, calls still running are ended (error frame and
# terminator) and get this long to write them before the server cancels them.
_FINISH_SECONDS = 1.0


class StartupError(Exception):
    """The gateway cannot start as configured (a port is taken); one line for the operator."""


def check_ports(server: ServerConfig, names: tuple[str, ...]) -> None:
    """Fails with one clear line when a port the gateway needs is taken, before anything starts."""
    for name in names:
        port = getattr(server, name)
        host = {"grpc_port": server.grpc_host, "http_port": server.http_host}.get(name, "127.0.0.1")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As a listener binds: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(f"port {port} (server.{name}) is already in use") from None
                raise StartupError(f"cannot listen on {host}:{port} (server.{name}): {exc.strerror}") from None


class Gateway:
    """The running server: one store, one directory, one ledger, one recorder, one grpc.aio server."""

    def __init__(self, config: Config, clock: Clock | None = None, edge: Envoy | None = None) -> None:
        self.config = config
        # Envoy in front (`modelway up`): drained before the server stops.
        self.edge = edge
        self.clock = clock or SystemClock()
        # Operations: metrics fed by hooks in core, readiness, and the loopback port serving both.
        self.telemetry = Telemetry(models=(m.id for m in config.models), providers=(p.name for p in config.providers))
        self.readiness = Readiness()
        self.ops = OpsServer(self.telemetry.registry, self.readiness, config.server.ops_port)
        self.store = open_store(config.store)
        # Limits, budgets and credits: in this process's memory (one worker), or in Redis, shared by
        # every process ([shared] redis_url), which also tells them all of key changes.
        self.shared: SharedState | None = None
        self.ledger: RecordedLedger
        self.budgets: TokenBudgets | SharedBudgets
        holds: CallHolds
        limiter: RateLimits
        if config.shared.redis_url:
            self.shared = open_shared_state(config.shared, self.store, self.clock, self._reload_keys)
            self.ledger, self.budgets, limiter = self.shared.ledger, self.shared.budgets, self.shared.limits
            holds = self.shared.holds
        else:
            self.ledger, self.budgets, limiter = Ledger(self.store), TokenBudgets(self.clock), RateLimiter(self.clock)
            holds = HoldsInTurn(self.budgets, self.ledger)
        self.directory = Directory(
            self.store,
            config,
            self.clock,
            on_reload=self.ledger.reload,
            on_key_change=None if self.shared is None else self.shared.key_changes.changed,
        )
        self.recorder = UsageRecorder(
            self.store,
            self.directory,
            self.ledger,
            flush_seconds=config.store.usage_flush_seconds,
            max_queued=config.store.max_queued_rows,
            telemetry=self.telemetry,
        )
        if self.shared is not None:
            # A rebuilt shared state lacks the tokens of rows not written yet: this process adds its own.
            self.shared.link.count_unwritten(self.recorder.unwritten_tokens)
        self.catalog = Catalog(config.models)
        self.gate = Gate(self.directory, limiter, config)
        self.metering = Metering(
            self.recorder,
            self.ledger,
            holds,
            self.clock,
            self.telemetry,
            checkpoint_seconds=config.store.checkpoint_seconds,
        )
        # The one HTTP session of the process, for every upstream.
        self.transport = Transport()
        routing = config.routing
        self.breakers = Breakers(
            (p.name for p in config.providers),
            threshold=routing.breaker_failures,
            cooldown=routing.breaker_cooldown_seconds,
            clock=self.clock,
        )
        self.telemetry.watch(self.breakers, lambda: self.recorder.queue_depth)
        self.pipeline = Pipeline(
            self.gate,
            Resolver(self.catalog, config.aliases, latency=lambda provider: self.breakers[provider].latency),
            Router(
                ProviderRegistry(config.providers, self.transport),
                self.breakers,
                routing,
                self.clock,
                telemetry=self.telemetry,
            ),
            self.metering,
            self.clock,
        )
        # Generated images that callers fetch by URL, beside the store.
        self.gallery = Gallery(
            ImageFiles(config.store.files_dir / "images", config.store.image_retention_hours * 3600, self.clock),
            config.server,
        )
        self.health = HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                # Above Envoy's limits (16 MiB bodies, 8 KiB URL + 32 KiB
                # headers), so a REST caller always gets Envoy's 413/414/431.
                ("grpc.max_receive_message_length", 32 * 1024 * 1024),
                ("grpc.max_metadata_size", 64 * 1024),
                ("grpc.absolute_max_metadata_size", 64 * 1024),
            ],
        )
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Starts every part; on a failure half-way, closes what it started and raises (StartupError for a port)."""
        async with contextlib.AsyncExitStack() as undo:
            # First, so that a taken port stops start-up early and /readyz says "starting" while loading.
            try:
                await self.ops.start()
            except OSError as exc:
                raise StartupError(self._cannot_listen("ops_port", "127.0.0.1", exc.strerror)) from None
            undo.push_async_callback(self.ops.stop)
            await self.store.open()
            undo.push_async_callback(self.store.close)
            await self.transport.start()
            undo.push_async_callback(self.transport.close)
            await self.directory.load()
            today = day_start(self.clock.now())
            self.budgets.load(today, await self.store.tokens_since(today))
            if self.shared is not None:
                await self.shared.start()
                undo.push_async_callback(self.shared.close)
            self.recorder.start()
            undo.push_async_callback(self.recorder.close)
            self._refresher = asyncio.create_task(self._follow_store(), name="store-follower")
            undo.push_async_callback(self._stop_refresher)
            self.gallery.files.start_sweeping()
            undo.push_async_callback(self.gallery.files.stop_sweeping)
            self._add_services()
            server = self.config.server
            try:
                port = self.server.add_insecure_port(f"{server.grpc_host}:{server.grpc_port}")
            except RuntimeError:  # grpcio says only "Failed to bind to address"
                raise StartupError(self._cannot_listen("grpc_port", server.grpc_host, None)) from None
            await self.server.start()
            undo.push_async_callback(self.server.stop, None)
            for name in ("", *_SERVICES):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            # Started: from here on stop() closes everything.
            undo.pop_all()
        self.readiness.ready()
        log.info("modelway gRPC listening on %s:%d", server.grpc_host, port)
        return port

    def _cannot_listen(self, name: str, host: str, reason: str | None) -> str:
        port = getattr(self.config.server, name)
        reason = reason or "the port is taken, or the address is not one of this machine's"
        return f"cannot listen on {host}:{port} (server.{name}): {reason}"

    def _add_services(self) -> None:
        # Every method in one table, matched by one lookup per call (see services/methods.py).
        table = MethodTable()
        server = table.as_server()
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(self.pipeline), server)
        chat_rest_pb2_grpc.add_ChatRestServiceServicer_to_server(ChatRestServicer(self.pipeline), server)
        images_pb2_grpc.add_ImagesServiceServicer_to_server(ImagesServicer(self.pipeline, self.gallery), server)
        images_rest_pb2_grpc.add_ImagesRestServiceServicer_to_server(
            ImagesRestServicer(self.pipeline, self.gallery), server
        )
        models_pb2_grpc.add_ModelsServiceServicer_to_server(ModelsServicer(self.catalog, self.gate), server)
        keys = KeysServicer(KeyAdmin(self.directory, self.catalog, self.config, self.clock), self.gate, self.clock)
        keys_pb2_grpc.add_KeysServiceServicer_to_server(keys, server)
        keys_rest_pb2_grpc.add_KeysRestServiceServicer_to_server(KeysRestServicer(keys), server)
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(UsageReports(self.store, self.recorder, self.clock), self.gate), server
        )
        gemini_pb2_grpc.add_GeminiServiceServicer_to_server(GeminiServicer(self.pipeline), server)
        gemini_rest_pb2_grpc.add_GeminiRestServiceServicer_to_server(
            GeminiRestServicer(self.pipeline, self.catalog, self.gate), server
        )
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(GenerateServicer(self.pipeline), server)
        ai_rest_pb2_grpc.add_AiRestServiceServicer_to_server(AiRestServicer(self.pipeline), server)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(self.catalog), server)
        catalog_rest_pb2_grpc.add_CatalogRestServiceServicer_to_server(CatalogRestServicer(self.catalog), server)
        chat_send = ChatSend(self.pipeline, self.gate, self.catalog, self.store, self.clock)
        conversations_pb2_grpc.add_ConversationsServiceServicer_to_server(ConversationsServicer(chat_send), server)
        conversations_rest_pb2_grpc.add_ConversationsRestServiceServicer_to_server(
            ConversationsRestServicer(chat_send), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection((*_SERVICES, health.SERVICE_NAME), table)
        table.install(self.server)

    async def _reload_keys(self) -> None:
        """Another process changed keys (a message on the shared channel): read them again now."""
        await self.directory.load()

    async def _stop_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _follow_store(self) -> None:
        """Picks up what other processes (the CLI, other replicas) changed."""
        while True:
            await asyncio.sleep(self.config.store.refresh_seconds)
            try:
                await self.directory.refresh()
            except StoreUnavailable as exc:
                # Every second while it lasts: one line each, no traceback.
                log.warning("store refresh failed: %s", exc.message)
            except Exception:
                log.exception("store refresh failed")

    async def begin_drain(self) -> None:
        """Stops new calls coming: /readyz answers 503 "draining", gRPC health NOT_SERVING, from now on."""
        self.readiness.drain()
        await self.health.enter_graceful_shutdown()

    async def stop(self) -> None:
        """Drains: no new work, in-flight calls finish within the grace period, the rest are ended cleanly.

        Order matters: health says NOT_SERVING and Envoy stops handing out
        connections first, so load balancers and clients move away while
        the calls under way finish; after the grace period every call still
        running writes its error frame and terminator (recorded as a server
        shutdown) and gets a moment to send it; then the server stops and
        every pending usage row is written. Envoy is stopped by its owner
        after this returns.
        """
        await self.begin_drain()
        if self.edge is not None:
            await asyncio.to_thread(self.edge.drain)
        grace = self.config.server.shutdown_grace_seconds
        # Refuses new calls at once; cancels whatever still runs at grace + finish.
        stopping = asyncio.ensure_future(self.server.stop(grace + _FINISH_SECONDS))
        done, _ = await asyncio.wait({stopping}, timeout=grace)
        if not done:
            self.pipeline.stop_streams()
        await stopping
        # A cancelled call's generators are closed a few loop turns after the server let go of them:
        # its row must be queued before the writer closes.
        if not await self.metering.quiesce(_FINISH_SECONDS):
            log.error("calls still unsettled after the server stopped; their usage rows may be missing")
        # Ended before the store closes, so no reload is left half-way.
        await self._stop_refresher()
        await self.gallery.files.stop_sweeping()
        await self.recorder.close()
        if self.shared is not None:
            await self.shared.close()
        await self.transport.close()
        await self.store.close()
        await self.ops.stop()


async def run(
    gateway: Gateway,
    wait_ready: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Starts the gateway, serves until SIGINT, SIGTERM or SIGHUP, then drains and stops it.

    `wait_ready` (until Envoy answers, say) is given up when a signal comes
    first; `on_ready` (make and show the first key) runs only if none came,
    and to its end, so that nothing it does is left half-done. A second
    signal during the drain exits at once (stopping Envoy too, which runs in
    its own session and would otherwise outlive us).
    """
    stopping = asyncio.Event()

    def on_signal() -> None:
        if not stopping.is_set():
            log.info(
                "shutting down: draining for up to %ss (a second signal exits at once)",
                gateway.config.server.shutdown_grace_seconds,
            )
            stopping.set()
            return
        log.warning("second signal: exiting at once")
        if gateway.edge is not None:
            gateway.edge.kill()
        os._exit(1)

    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal or a supervisor's reload must drain, not cut every call.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    await gateway.start()  # closes what it started if it fails
    freeze_startup_heap()
    try:
        if wait_ready is not None and not stopping.is_set():
            await _unless_stopped(wait_ready(), stopping)
        if on_ready is not None and not stopping.is_set():
            await on_ready()
        await stopping.wait()
    finally:
        await gateway.stop()


# Net allocations between collections of the youngest generation, once start-up is frozen (Python's default is 700).
_YOUNG_COLLECTION_THRESHOLD = 5_000


def freeze_startup_heap() -> None:
    """What start-up made (config, catalog, keys, the protobuf and grpc modules: some 70,000 objects)
    lives as long as the serving process: frozen, the collector's full passes no longer walk it.
    Measured under load: a full pass stalled every call in flight for 44-50 ms, about once per 2,000
    calls; frozen, under 1 ms. Called by a process that serves (and bench.inproc), not by Gateway.start,
    which tests run inside pytest's own process.

    The youngest generation is then collected after 5,000 net allocations instead of 700: each
    collection walks the objects of the calls in flight, whatever the threshold, so collecting
    less often costs less (1.7% of a chat call's instructions, measured under callgrind)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def _unless_stopped(waiting: Awaitable[None], stopping: asyncio.Event) -> None:
    """Awaits `waiting`, or cancels it when `stopping` is set first."""
    task = asyncio.ensure_future(waiting)
    signalled = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # its error, if it failed


async def serve(config: Config) -> None:
    """`modelway serve`: the gRPC server alone (one of `--workers N` when its supervisor is named)."""
    gateway = Gateway(config)
    check_ports(config.server, ("grpc_port", "ops_port"))
    supervisor = os.environ.get(SUPERVISOR_PID, "")
    watch = asyncio.create_task(outlive_no_supervisor(int(supervisor))) if supervisor.isdigit() else None
    try:
        await run(gateway)
    finally:
        if watch is not None:
            watch.cancel()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The serving processes' event loop: uvloop's when it is installed, asyncio's own otherwise.

    uvloop's loop (libuv) does the same work as asyncio's selector loop with
    a fraction of the CPU: measured on a non-stream chat call through Envoy,
    it took most of the loop's own overhead (epoll, callback scheduling,
    socket writes) off every request. Without it everything still works.
    """
    try:
        import uvloop
    except ImportError:  # an install without the wheel (an unusual platform): asyncio's loop is correct too
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_serving(main: Coroutine[Any, Any, T]) -> T:
    """Runs a serving coroutine (`serve`, `up`) to its end on the `loop_factory` loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
