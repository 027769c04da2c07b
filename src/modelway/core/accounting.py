"""Usage accounting: one row per call, written in batches off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelway.core.keys import KeyRing
from modelway.store import SqliteStore, UsageRecord

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)


class UsageRecorder:
    """Collects usage rows in memory and writes them every `flush_seconds`.

    `record` never blocks or awaits, so the hot path pays nothing for the
    database. `close` writes what is left: a clean shutdown loses no row.
    A failed write keeps its rows for the next attempt.
    """

    def __init__(self, store: SqliteStore, keys: KeyRing, *, flush_seconds: float) -> None:
        self._store = store
        self._keys = keys
        self._flush_seconds = flush_seconds
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    def record(self, row: UsageRecord) -> None:
        self._pending.append(row)
        if len(self._pending) >= 500:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("usage flush failed; rows kept for the next attempt")

    async def flush(self) -> None:
        async with self._flush_lock:
            rows, self._pending = self._pending, []
            last_used = self._keys.take_last_used()
            if not rows and not last_used:
                return
            try:
                await self._store.record_calls(rows, last_used)
            except BaseException:
                self._pending[:0] = rows
                raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
