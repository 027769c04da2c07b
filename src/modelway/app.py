"""Wiring and lifecycle: builds every part from the configuration, serves, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from modelway.config import Config
from modelway.core.access import Gate
from modelway.core.accounting import UsageRecorder
from modelway.core.breaker import Breakers
from modelway.core.budgets import TokenBudgets, day_start
from modelway.core.catalog import Catalog
from modelway.core.clock import Clock, SystemClock
from modelway.core.directory import Directory
from modelway.core.key_admin import KeyAdmin
from modelway.core.ledger import Ledger
from modelway.core.limits import RateLimiter
from modelway.core.metering import Metering
from modelway.core.pipeline import Pipeline
from modelway.core.reports import UsageReports
from modelway.core.router import Router
from modelway.core.routing import Resolver
from modelway.providers.http import Transport
from modelway.providers.registry import ProviderRegistry
from modelway.services._rpc import DecodeGuard
from modelway.services.chat import ChatRestServicer, ChatServicer
from modelway.services.keys import KeysRestServicer, KeysServicer
from modelway.services.models import ModelsServicer
from modelway.services.reflection import enable_reflection
from modelway.services.usage import UsageServicer
from modelway.store import SqliteStore
from modelway.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from modelway.v1.rest import chat_pb2 as chat_rest_pb2
from modelway.v1.rest import chat_pb2_grpc as chat_rest_pb2_grpc
from modelway.v1.rest import keys_pb2 as keys_rest_pb2
from modelway.v1.rest import keys_pb2_grpc as keys_rest_pb2_grpc

__all__ = ["Gateway", "serve"]

log = logging.getLogger(__name__)

_SERVICES = (
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelsService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeysService"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    chat_rest_pb2.DESCRIPTOR.services_by_name["ChatRestService"].full_name,
    keys_rest_pb2.DESCRIPTOR.services_by_name["KeysRestService"].full_name,
)


class Gateway:
    """The running server: one store, one directory, one ledger, one recorder, one grpc.aio server."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store = SqliteStore(config.store.path)
        self.ledger = Ledger(self.store)
        self.directory = Directory(self.store, config, self.clock, on_reload=self.ledger.reload)
        self.budgets = TokenBudgets(self.clock)
        self.recorder = UsageRecorder(
            self.store, self.directory, self.ledger, flush_seconds=config.store.usage_flush_seconds
        )
        self.catalog = Catalog(config.models)
        self.gate = Gate(self.directory, RateLimiter(self.clock), config)
        self.metering = Metering(self.recorder, self.ledger, self.budgets, self.clock)
        # The one HTTP session of the process, for every upstream.
        self.transport = Transport()
        routing = config.routing
        self.breakers = Breakers(
            (p.name for p in config.providers),
            threshold=routing.breaker_failures,
            cooldown=routing.breaker_cooldown_seconds,
            clock=self.clock,
        )
        self.pipeline = Pipeline(
            self.gate,
            Resolver(self.catalog, config.aliases, latency=lambda provider: self.breakers[provider].latency),
            Router(ProviderRegistry(config.providers, self.transport), self.breakers, routing, self.clock),
            self.metering,
            self.clock,
        )
        self.health = HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[DecodeGuard()],
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 32 * 1024 * 1024)],
        )
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        await self.store.open()
        await self.transport.start()
        await self.directory.load()
        today = day_start(self.clock.now())
        self.budgets.load(today, await self.store.tokens_since(today))
        self.recorder.start()
        self._refresher = asyncio.create_task(self._follow_store(), name="store-follower")
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(self.pipeline), self.server)
        chat_rest_pb2_grpc.add_ChatRestServiceServicer_to_server(ChatRestServicer(self.pipeline), self.server)
        models_pb2_grpc.add_ModelsServiceServicer_to_server(ModelsServicer(self.catalog, self.gate), self.server)
        keys = KeysServicer(KeyAdmin(self.directory, self.catalog, self.config, self.clock), self.gate, self.clock)
        keys_pb2_grpc.add_KeysServiceServicer_to_server(keys, self.server)
        keys_rest_pb2_grpc.add_KeysRestServiceServicer_to_server(KeysRestServicer(keys), self.server)
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(UsageReports(self.store, self.recorder, self.clock), self.gate), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection((*_SERVICES, health.SERVICE_NAME), self.server)
        server = self.config.server
        port = self.server.add_insecure_port(f"{server.grpc_host}:{server.grpc_port}")
        await self.server.start()
        for name in ("", *_SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("modelway gRPC listening on %s:%d", server.grpc_host, port)
        return port

    async def _follow_store(self) -> None:
        """Picks up what other processes (the CLI, other replicas) changed."""
        while True:
            await asyncio.sleep(self.config.store.refresh_seconds)
            try:
                await self.directory.refresh()
            except Exception:
                log.exception("store refresh failed")

    async def stop(self) -> None:
        """Drains in-flight calls, then writes every pending usage row."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.shutdown_grace_seconds)
        if self._refresher is not None:
            # Ended before the store closes, so no reload is left half-way.
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.recorder.close()
        await self.transport.close()
        await self.store.close()


async def serve(config: Config) -> None:
    gateway = Gateway(config)
    await gateway.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await gateway.stop()
