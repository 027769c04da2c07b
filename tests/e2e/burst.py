"""Concurrent HTTP calls through Envoy, for limits and credits under contention."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


async def burst(port: int, count: int, body: dict[str, Any], key: str) -> list[Answer]:
    """Sends `count` identical chat calls at once; every one gets its own connection."""
    url = f"http://127.0.0.1:{port}/api/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = asyncio.Event()

        async def one() -> Answer:
            await start.wait()
            async with session.post(url, json=body, headers=headers) as response:
                return Answer(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, await response.json()
                )

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)
