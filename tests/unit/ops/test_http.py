"""The operations port over real HTTP on 127.0.0.1: liveness, readiness through its three states, metrics."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelway.ops import OpsServer, Readiness, Telemetry


async def get(port: int, path: str) -> tuple[int, str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, response.content_type, body


async def test_readiness_states_over_http() -> None:
    readiness = Readiness()
    server = OpsServer(Telemetry().registry, readiness, 0)
    await server.start()
    try:
        port = server.port
        assert port > 0
        assert await get(port, "/healthz") == (200, "application/json", {"status": "ok"})
        assert await get(port, "/readyz") == (503, "application/json", {"status": "starting"})
        readiness.ready()
        assert await get(port, "/readyz") == (200, "application/json", {"status": "ready"})
        readiness.drain()
        readiness.ready()  # a draining process never becomes ready again
        assert await get(port, "/readyz") == (503, "application/json", {"status": "draining"})
        assert await get(port, "/healthz") == (200, "application/json", {"status": "ok"})
        status, content_type, text = await get(port, "/metrics")
        assert (status, content_type) == (200, "text/plain")
        names = {family.name for family in text_string_to_metric_families(str(text))}
        assert {"modelway_requests", "modelway_usage_commit_duration_seconds", "process_resident_memory_bytes"} <= names
        assert (await get(port, "/other"))[0] == 404
    finally:
        await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")


async def test_taken_port_fails_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = OpsServer(Telemetry().registry, Readiness(), taken.getsockname()[1])
        with pytest.raises(OSError):
            await server.start()


def listening_addresses(port: int) -> set[str]:
    """The local addresses listening on `port`, from the kernel's socket table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


async def test_binds_loopback_only() -> None:
    server = OpsServer(Telemetry().registry, Readiness(), 0)
    await server.start()
    try:
        assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1, and nothing else
    finally:
        await server.stop()
