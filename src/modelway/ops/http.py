"""The operations port: GET /metrics, /healthz and /readyz over HTTP, on loopback only, in the server process.

/metrics is for a Prometheus on this machine and is never routed through
Envoy; /healthz and /readyz are (Envoy forwards exactly those two paths).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from modelway.ops.health import Readiness

__all__ = ["NotReady", "OpsServer", "wait_until_ready"]

# Bound here whatever server.grpc_host says: the port has no authentication.
_LOOPBACK = "127.0.0.1"


class OpsServer:
    def __init__(self, registry: CollectorRegistry, readiness: Readiness, port: int) -> None:
        self._readiness = readiness
        self._port = port
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry), allow_head=False)
        app.router.add_get("/healthz", self._healthz, allow_head=False)
        app.router.add_get("/readyz", self._readyz, allow_head=False)
        # No access log: probes every few seconds would drown the call lines.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0)."""
        addresses = self._runner.addresses if self._site is not None else []
        return int(addresses[0][1]) if addresses else self._port

    async def start(self) -> None:
        """Binds the port; OSError when it is taken."""
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, _LOOPBACK, self._port, reuse_port=False)
        try:
            await self._site.start()
        except OSError:
            await self._runner.cleanup()
            self._site = None
            raise

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._site = None

    async def _healthz(self, _: web.Request) -> web.Response:
        # Liveness: answering at all is the proof; draining is still alive.
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        state = self._readiness.state
        return web.json_response({"status": state.value}, status=200 if self._readiness.is_ready else 503)


class NotReady(Exception):
    """The process `wait_until_ready` waited for ended: one line saying which and how."""


async def wait_until_ready(url: str, timeout: float, ended: Callable[[], str | None]) -> None:
    """Polls GET `url` (a /readyz, direct or through Envoy) every 0.1 s until it answers 200.

    `ended` says why waiting is pointless (the process that should answer
    exited), or None: NotReady carries that line. TimeoutError after
    `timeout` seconds. Refused connections, slow answers and other statuses
    are "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            why = ended()
            if why is not None:
                raise NotReady(why)
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")
            await asyncio.sleep(0.1)
