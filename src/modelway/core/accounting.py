"""Usage accounting: rows and charges committed in groups, each caller told when its row is safe."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from modelway.core.directory import Directory
from modelway.core.state import RecordedLedger
from modelway.core.writes import await_write
from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init
from modelway.ops.metrics import Telemetry
from modelway.store import Store, UsageRecord

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)

# After a failed write, the next attempt waits this long, doubling up to _RETRY_MAX.
_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _until_done(future: asyncio.Future[None], timeout: float) -> None:
    """Waits until `future` is done or `timeout` seconds have passed, never cancelling it.

    What asyncio.wait({future}, timeout=...) does for one future, at about half its cost (a set, a
    second helper and their callbacks fewer): every call waits here once for its row's commit.
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(timeout, _wake, waiter)
    wake = functools.partial(_wake, waiter)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)


@slot_init
@dataclass(frozen=True, slots=True)
class _Queued:
    row: UsageRecord
    charge: int  # micro-credits this write adds to the account's spend (a checkpoint's row carries part)
    committed: asyncio.Future[None]


class UsageRecorder:
    """Writes usage rows, the credits they cost and the keys' last-used times, one transaction per batch.

    Group commit: `record(row)` queues the row and returns a future that is
    resolved when the transaction holding it has committed. The writer takes
    whatever is pending whenever it is free, so while one batch is on the
    store thread the next one gathers: one commit serves every call that
    finished meanwhile; under load a batch also gathers for up to
    `commit_window` (a few ms), and a lone call is committed at once. A surface awaits
    that future (through `committed`, bounded) before the last bytes of its
    answer go out, so an answer a client received completely survives a
    crash of the process.

    `record` never blocks or awaits. A failed write keeps its rows (and their
    futures) and charges for the next attempt, retried with backoff; a caller
    waiting on such a row stops waiting after `commit_wait` seconds and
    answers anyway: the row is still pending, not lost, and is never written
    twice. `close` writes what is left: a clean shutdown loses no row.
    Rows are written by request id: a long stream's checkpoints and its final
    row are one row, rewritten, each write charging only what it adds.
    Last-used times with no row to carry them are written every `flush_seconds`.
    """

    def __init__(
        self,
        store: Store,
        directory: Directory,
        ledger: RecordedLedger,
        *,
        flush_seconds: float,
        commit_wait: float = 5.0,
        commit_window: float = 0.005,
        max_queued: int = 10_000,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry or Telemetry()
        self._store = store
        self._directory = directory
        self._ledger = ledger
        self._flush_seconds = flush_seconds
        self._commit_wait = commit_wait
        self._commit_window = commit_window
        self._last_write = 0.0
        self._pending: list[_Queued] = []
        # Rows taken by the write under way, from the moment their charges start moving (a
        # registration made from inside that move reads them as unwritten); back in `_pending` if it fails.
        self._writing: list[_Queued] = []
        self._max_queued = max_queued
        self._refused_unrecorded = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # How many calls are under way (recorded or not): set by the Metering that feeds this recorder.
        self._calls_open: Callable[[], int] = lambda: 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    def count_calls(self, calls_open: Callable[[], int]) -> None:
        """Where the recorder learns how many calls are under way: a batch waits for company only when
        some of them have not recorded their row yet (see `_run`)."""
        self._calls_open = calls_open

    @property
    def queue_depth(self) -> int:
        """Rows recorded and not yet committed (a gauge read at scrape time)."""
        return len(self._pending) + len(self._writing)

    @property
    def full(self) -> bool:
        """As many rows wait for the store (it is unreachable) as memory may hold: admit no new call."""
        return self.queue_depth >= self._max_queued

    def unwritten_tokens(self, since: float) -> dict[str, int]:
        """Tokens per key of the rows created since `since` that are not committed yet (queued, or in
        the write under way): what a rebuilt shared state, read from the store, does not count yet.
        A request id's latest row counts (the one the store would keep)."""
        latest = {queued.row.request_id: queued.row for queued in (*self._writing, *self._pending)}
        tokens: Counter[str] = Counter()
        for row in latest.values():
            if row.key_id and row.created_at >= since:
                tokens[row.key_id] += row.prompt_tokens + row.completion_tokens
        return dict(tokens)

    def record(self, row: UsageRecord, *, charge: int | None = None) -> asyncio.Future[None]:
        """Queues a row (a new one, or a newer state of a row already written under its request id)
        and the charge it adds (default: its whole cost); the future resolves once it is committed.
        Never awaits."""
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.full and row.error_code == Reason.STORE_UNAVAILABLE.value and not row.cost and not charge:
            # A call refused because the queue is full used and cost nothing; queueing its row
            # would grow the queue past its bound with every refusal. It is counted in the log instead.
            self._refused_unrecorded += 1
            if self._refused_unrecorded in (1, 10, 100) or self._refused_unrecorded % 1000 == 0:
                log.warning("usage queue full: %d refused calls left without a usage row", self._refused_unrecorded)
            committed.set_result(None)
            return committed
        self._pending.append(_Queued(row, row.cost if charge is None else charge, committed))
        self._wake.set()
        return committed

    async def committed(self, row: asyncio.Future[None]) -> bool:
        """Waits for a recorded row's commit, at most `commit_wait` seconds; whether it is committed.

        Never cancels the commit itself: a caller that stops waiting leaves the row pending.
        """
        if not row.done():
            await _until_done(row, self._commit_wait)
            if not row.done():
                log.warning(
                    "usage row not committed after %.1fs; answering anyway, the row stays queued", self._commit_wait
                )
        return row.done()

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            if failures == 0:
                # asyncio.timeout, not wait_for: the wait stays in this task (no task of its own to
                # make, and fewer turns of the loop before a lone call's row is written).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_seconds):
                        await self._wake.wait()
            # Under load (the last write ended moments ago, and other calls are still
            # running, so more rows are coming) rows gather for up to `commit_window`:
            # fewer, larger transactions, which keeps the per-call CPU cost down. A lone
            # call, also one of a sequence of calls one at a time, is committed at once:
            # waiting would only add the window to its answer's latency.
            since = time.monotonic() - self._last_write
            if since < self._commit_window and self._calls_open() > len(self._pending):
                await asyncio.sleep(self._commit_window - since)
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
                self._last_write = time.monotonic()
            except GatewayError as exc:
                # Redis or the store away: expected, and said in one line (the retry follows shortly).
                failures += 1
                log.warning(
                    "usage write failed (%s); %d rows kept for the next attempt", exc.reason.value, len(self._pending)
                )
                await asyncio.sleep(min(_RETRY_MAX, _RETRY_FIRST * 2 ** (failures - 1)))
            except Exception:
                failures += 1
                log.exception("usage write failed; %d rows kept for the next attempt", len(self._pending))
                await asyncio.sleep(min(_RETRY_MAX, _RETRY_FIRST * 2 ** (failures - 1)))

    async def flush(self) -> None:
        """Writes everything pending now, in one transaction."""
        async with self._ledger.lock:
            batch, self._pending = self._pending, []
            last_used = self._directory.take_last_used()
            if not batch and not last_used:
                return
            # A row's cost is what the ledger charged for it: the charge is written with its row.
            charges: Counter[str] = Counter()
            for queued in batch:
                if queued.charge:
                    charges[queued.row.account_id] += queued.charge

            # Shared state first moves the charges from held to written, so that a rebuild of it
            # can tell them apart; when it cannot (Redis away), the rows wait, except at shutdown.
            # Set before the move: the move may register this process in a rebuilt state (a take), and
            # that registration counts these rows' tokens as unwritten, which they still are.
            self._writing = batch
            try:
                await self._ledger.writing(charges, final=self._closing)
            except BaseException:
                self._writing = []
                self._pending[:0] = batch
                self._directory.restore_last_used(last_used)
                raise

            def settled(error: BaseException | None) -> None:
                self._writing = []
                if error is None:
                    self._ledger.charges_written(charges)
                    for queued in batch:
                        if not queued.committed.done():
                            queued.committed.set_result(None)
                else:
                    self._ledger.write_failed(charges)
                    self._pending[:0] = batch
                    self._directory.restore_last_used(last_used)

            started = time.perf_counter()
            await await_write(self._store.record_calls([queued.row for queued in batch], last_used, charges), settled)
            self._telemetry.usage_committed(time.perf_counter() - started)

    async def close(self, *, attempts: int = 5) -> None:
        """Stops the loop after its current write, then writes what is left, retrying a busy store."""
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
                log.exception("final usage write failed (attempt %d of %d)", attempt, attempts)
                await asyncio.sleep(0.5 * 2**attempt)
