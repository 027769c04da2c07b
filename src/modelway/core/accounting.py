"""Usage accounting: rows and charges written in batches off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelway.core.directory import Directory
from modelway.core.ledger import Ledger
from modelway.core.writes import await_write
from modelway.ops.metrics import Telemetry
from modelway.store import SqliteStore, UsageRecord

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)


class UsageRecorder:
    """Collects usage rows in memory and writes them every `flush_seconds`,
    together with the credits they cost and the keys' last-used times, in one
    transaction.

    `record` never blocks or awaits, so the hot path pays nothing for the
    database. `close` writes what is left: a clean shutdown loses no row.
    A failed write keeps its rows and charges for the next attempt.
    """

    def __init__(
        self,
        store: SqliteStore,
        directory: Directory,
        ledger: Ledger,
        *,
        flush_seconds: float,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry or Telemetry()
        self._store = store
        self._directory = directory
        self._ledger = ledger
        self._flush_seconds = flush_seconds
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    @property
    def queue_depth(self) -> int:
        """Rows recorded and not yet committed (a gauge read at scrape time)."""
        return len(self._pending)

    def record(self, row: UsageRecord) -> None:
        self._pending.append(row)
        if len(self._pending) >= 500:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("usage flush failed; rows kept for the next attempt")

    async def flush(self) -> None:
        async with self._ledger.lock:
            rows, self._pending = self._pending, []
            charges = self._ledger.take_charges()
            last_used = self._directory.take_last_used()
            if not rows and not charges and not last_used:
                return

            def settled(error: BaseException | None) -> None:
                if error is None:
                    self._ledger.charges_written()
                else:
                    self._pending[:0] = rows
                    self._ledger.charges_failed()
                    self._directory.restore_last_used(last_used)

            started = time.perf_counter()
            await await_write(self._store.record_calls(rows, last_used, charges), settled)
            self._telemetry.usage_committed(time.perf_counter() - started)

    async def close(self, *, attempts: int = 5) -> None:
        """Stops the loop after its current flush, then writes what is left, retrying a busy store."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        for attempt in range(1, attempts + 1):
            try:
                await self.flush()
                return
            except Exception:
                if attempt == attempts:
                    log.critical("usage rows could not be written at shutdown: %d lost", len(self._pending))
                    raise
                log.exception("final usage flush failed (attempt %d of %d)", attempt, attempts)
                await asyncio.sleep(0.5 * 2**attempt)
