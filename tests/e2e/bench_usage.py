"""Per-call cost of usage accounting: N non-stream calls at concurrency C through Envoy.

    .venv/bin/python -m tests.e2e.bench_usage [calls] [concurrency]

Prints requests/s and the server process's CPU milliseconds per request (user + system, from
/proc/<pid>/stat), so a change to the usage writer can be measured before and after.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.conftest import TEST_CONFIG, running_stack


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, key: str, calls: int, concurrency: int) -> list[int]:
    url = f"http://127.0.0.1:{port}/api/v1/chat/completions"
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hello there"}]}
    headers = {"Authorization": f"Bearer {key}"}
    statuses: list[int] = []
    remaining = iter(range(calls))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                statuses.append(response.status)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return statuses


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    # The shipped default flush interval, not the tests' fast one.
    config = TEST_CONFIG.replace("usage_flush_seconds = 0.05", "usage_flush_seconds = 0.25")
    with tempfile.TemporaryDirectory() as workdir, running_stack(Path(workdir), config) as stack:
        assert stack.server is not None
        pid = stack.server.pid
        asyncio.run(load(stack.http_port, stack.api_key, 200, concurrency))  # warm-up
        cpu, start = cpu_seconds(pid), time.monotonic()
        statuses = asyncio.run(load(stack.http_port, stack.api_key, calls, concurrency))
        elapsed, used = time.monotonic() - start, cpu_seconds(pid) - cpu
        assert statuses.count(200) == calls, {s: statuses.count(s) for s in set(statuses)}
        print(
            f"{calls} calls at concurrency {concurrency}: {calls / elapsed:.0f} requests/s, "
            f"server CPU {used * 1000 / calls:.2f} ms per request"
        )


if __name__ == "__main__":
    main()
