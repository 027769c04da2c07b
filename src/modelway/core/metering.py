"""Per-call metering: whatever happens, each call leaves exactly one usage row."""

from __future__ import annotations

import asyncio
from types import TracebackType

from modelway.core.accounting import UsageRecorder
from modelway.core.clock import Clock
from modelway.errors import GatewayError
from modelway.store import UsageRecord

__all__ = ["CallMeter"]

# nginx's "client closed request": the caller went away before the end.
CLIENT_CLOSED = 499


class CallMeter:
    """Gathers what one call used while it runs; records it once on exit.

    The exit status comes from how the call ended: normally (200 unless
    `fail` was called for an error written into a stream), a GatewayError
    (its HTTP status), cancellation by the client (499), anything else (500).
    """

    def __init__(self, recorder: UsageRecorder, clock: Clock, *, request_id: str, surface: str) -> None:
        self._recorder = recorder
        self._clock = clock
        self._started = clock.monotonic()
        self.request_id = request_id
        self.surface = surface
        self.key_id = ""
        self.model = ""
        self.provider = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._status = 200
        self._error_code = ""
        self._recorded = False

    def fail(self, error: GatewayError) -> None:
        """Marks a call that ended in an error after its response had begun."""
        self._status = error.http_status
        self._error_code = error.code

    def __enter__(self) -> CallMeter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, GatewayError):
            self.fail(exc)
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self._status, self._error_code = CLIENT_CLOSED, "client_closed"
        elif exc is not None:
            self._status, self._error_code = 500, "internal_error"
        self._record()

    def _record(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        self._recorder.record(
            UsageRecord(
                request_id=self.request_id,
                key_id=self.key_id,
                surface=self.surface,
                model=self.model,
                provider=self.provider,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                latency_ms=round((self._clock.monotonic() - self._started) * 1000),
                status=self._status,
                error_code=self._error_code,
                created_at=self._clock.now(),
            )
        )
