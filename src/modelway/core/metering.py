"""Per-call metering: whatever happens, each call settles its holds and leaves exactly one usage row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType

from modelway.config import ModelConfig
from modelway.core.accounting import UsageRecorder
from modelway.core.budgets import TokenHold
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.ledger import Reservation
from modelway.core.state import CallHolds, CreditLedger, TokenBudgetBook
from modelway.core.wording import Wording
from modelway.errors import GatewayError, Reason
from modelway.ops.metrics import Telemetry
from modelway.store import STORE_RETRY_AFTER, UsageRecord

__all__ = [
    "CLIENT_CLOSED",
    "IN_PROGRESS",
    "SERVER_SHUTDOWN",
    "SHUTDOWN_STATUS",
    "CallMeter",
    "HoldsInTurn",
    "Metering",
]

log = logging.getLogger(__name__)

# nginx's "client closed request": the caller went away before the end.
CLIENT_CLOSED = 499
# The error_code of a call the server ended because it is shutting down (its status is the error's, 503).
SERVER_SHUTDOWN = "server_shutdown"
SHUTDOWN_STATUS = 503
# The status of a stream's row while it runs (error_code "in_progress"); after a crash, one the crash cut.
IN_PROGRESS = 0


class CallMeter:
    """Gathers what one call used while it runs; settles and records it exactly once.

    A surface calls `finish` when the answer is complete and before its last
    bytes go out (the JSON body, the stream's terminator): the row is then
    final and committed when the client sees the end. A call that does not
    get that far is settled on exit instead, with the status of how it
    ended: a GatewayError (the status the surface showed; "server_shutdown"
    for the error `stopped` named), cancellation by the client (499),
    anything else (500). A call that produced no output costs nothing;
    otherwise it costs its tokens at the prices of the model that answered,
    never more than the account holds.
    """

    def __init__(
        self,
        metering: Metering,
        *,
        request_id: str,
        surface: str,
        status_of: Callable[[GatewayError], int],
        client_request_id: str = "",
    ) -> None:
        self._metering = metering
        self._status_of = status_of
        self._started = metering.clock.monotonic()
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.surface = surface
        self.caller: Caller | None = None
        self.model: ModelConfig | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # Images an image call made: each costs the answering model's credits_per_image, charged
        # (like tokens) only when the call ends well.
        self.images = 0
        self._reservation: Reservation | None = None
        self._hold: TokenHold | None = None
        self._status = 200
        self._error_code = ""
        self._recorded = False
        self._shutdown: GatewayError | None = None
        # When a streamed call's first output went out: its time to first token (telemetry).
        self.streamed = True
        self.first_output_at: float | None = None
        # Long streams write their row as they go (see `checkpoint`); what those writes charged.
        self._next_checkpoint = float("inf")
        self._drawn = 0
        # What the settled call was charged in all; the settling, for `withdraw` to wait on.
        self._charged = 0
        self._settling: asyncio.Future[asyncio.Future[None]] | None = None

    def attribute(self, caller: Caller) -> None:
        """From here on the call, failed or not, counts against this caller's account."""
        self.caller = caller

    async def admit(
        self,
        caller: Caller,
        model: ModelConfig,
        prompt_tokens: int,
        worst_tokens: int,
        worst_cost: int,
        wording: Wording,
    ) -> None:
        """Holds the call's worst case against the key's daily token budget (BUDGET_EXCEEDED)
        and the account's credits (INSUFFICIENT_CREDITS, advising in the surface's `wording`) until
        the call settles. `model` is the first candidate: the one the row names until another answers."""
        metering = self._metering
        self.caller, self.model, self.prompt_tokens = caller, model, prompt_tokens
        if metering.recorder.full:
            # Serving it would leave a call unrecorded: refused until the store takes the queue.
            raise GatewayError(
                Reason.STORE_UNAVAILABLE,
                "Usage cannot be recorded right now (the store is unreachable); try again shortly.",
                retry_after=STORE_RETRY_AFTER,
            )
        budget = caller.key.daily_token_budget or caller.plan.daily_token_budget
        self._hold, self._reservation = await metering.holds.take(
            caller.key.id, budget, worst_tokens, caller.account.id, worst_cost, wording.spend_less
        )

    def attempting(self, model: ModelConfig) -> None:
        """The router is trying this model: the row names it, and it prices the call, if it answers."""
        self.model = model

    def delivered(self) -> None:
        """Output went to the caller; the first time marks the call's time to first token."""
        if self.first_output_at is None:
            self.first_output_at = self._metering.clock.monotonic()
            self._next_checkpoint = self.first_output_at + self._metering.checkpoint_seconds

    def fail(self, error: GatewayError) -> None:
        """Marks a call that ended in an error (also one written into a stream that had begun)."""
        self._status = self._status_of(error)
        self._error_code = SERVER_SHUTDOWN if error is self._shutdown else error.reason.value

    def stopped(self, error: GatewayError) -> None:
        """The server is ending this call with `error`: its row says so, not the error's reason."""
        self._shutdown = error

    async def finish(self) -> None:
        """Settles and records the call as it stands, and waits (bounded) until its row is committed.

        Called before the answer's last bytes go out; leaving the meter afterwards records nothing more.
        """
        if self._recorded:
            return
        self._settling = asyncio.ensure_future(self._settle())
        committed = await asyncio.shield(self._settling)
        await self._metering.recorder.committed(committed)

    async def withdraw(self, error: GatewayError) -> None:
        """A finished answer that never reached its caller (its deadline passed while its row was being
        committed): the same row is rewritten as `error`, and what the call was charged is refunded."""
        if self._settling is None:
            return
        await asyncio.shield(self._settling)
        self.fail(error)
        self.completion_tokens = 0
        refund, self._charged = self._charged, 0
        if refund and self.caller is not None:
            await self._metering.ledger.refund(self.caller.account.id, refund)
        self._metering.recorder.record(self._row(self._status, self._error_code, 0, produced=False), charge=-refund)

    async def __aenter__(self) -> CallMeter:
        self._metering.call_opened()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._recorded:
                return
            gone = isinstance(exc, (asyncio.CancelledError, GeneratorExit))
            if isinstance(exc, GatewayError):
                self.fail(exc)
            elif gone and (self._shutdown is not None or self._metering.shutting_down):
                # Cut by the server's stop after the grace period, not by its caller.
                self._status, self._error_code = SHUTDOWN_STATUS, SERVER_SHUTDOWN
            elif gone:
                self._status, self._error_code = CLIENT_CLOSED, "client_closed"
            elif exc is not None:
                self._status, self._error_code = 500, "internal_error"
            # Shielded: a second cancellation must not leave a hold unsettled or a row unwritten.
            committed = await asyncio.shield(self._settle())
            if not gone:
                # An error answer goes out after this: it too is durable once the client has it.
                await self._metering.recorder.committed(committed)
        finally:
            self._metering.call_closed()

    @property
    def charged(self) -> int:
        """Micro-credits the call was charged in all; final once `finish` has returned."""
        return self._charged

    def balance(self) -> int:
        """Read only: the account's available micro-credits now (0 before the caller is known)."""
        if self.caller is None:
            return 0
        return max(0, self._metering.ledger.available(self.caller.account.id))

    def checkpoint_due(self) -> bool:
        """Whether a stream has run long enough since its last checkpoint to write another."""
        return self.streamed and self._metering.clock.monotonic() >= self._next_checkpoint

    async def checkpoint(self) -> None:
        """Writes a long stream's row as it stands, charging what was delivered since the last one:
        what a crash of the process would leave billed. The call's end rewrites the same row."""
        metering = self._metering
        self._next_checkpoint = metering.clock.monotonic() + metering.checkpoint_seconds
        if self._recorded or self._reservation is None or self.model is None:
            return
        cost = self._cost(self.model)
        self._reservation, charge = await metering.ledger.draw(self._reservation, cost - self._drawn)
        self._drawn += charge
        metering.recorder.record(self._row(IN_PROGRESS, "in_progress", self._drawn, produced=True), charge=charge)

    async def _settle(self) -> asyncio.Future[None]:
        """Settles the holds and queues the row; the future resolves when the row is committed."""
        self._recorded = True
        metering = self._metering
        charged = self._drawn
        produced = self._status == 200 or self.completion_tokens > 0
        if self._hold is not None and self._reservation is not None:
            tokens = self.prompt_tokens + self.completion_tokens if produced else 0
            cost = self._cost(self.model) if produced and self.model else 0
            # Written with this row (its cost), in the row's transaction.
            charged += await metering.holds.settle(self._hold, tokens, self._reservation, cost - self._drawn)
            self._hold = self._reservation = None
        self._charged = charged
        row = self._row(self._status, self._error_code, charged, produced=produced)
        committed = metering.recorder.record(row, charge=charged - self._drawn)
        first_output = self.first_output_at if self.streamed else None
        try:
            metering.telemetry.call_ended(row, None if first_output is None else first_output - self._started)
        except Exception:
            # Metrics are not worth a call's answer; the row is queued already.
            log.exception("telemetry failed for call %s", self.request_id)
        return committed

    def _cost(self, model: ModelConfig) -> int:
        """What the call has used so far, at `model`'s prices."""
        return model.cost(self.prompt_tokens, self.completion_tokens) + model.image_cost(self.images)

    def _row(self, status: int, error_code: str, cost: int, *, produced: bool) -> UsageRecord:
        metering = self._metering
        return UsageRecord(
            request_id=self.request_id,
            account_id=self.caller.account.id if self.caller else "",
            key_id=self.caller.key.id if self.caller else "",
            surface=self.surface,
            model=self.model.id if self.model else "",
            provider=self.model.provider if self.model else "",
            prompt_tokens=self.prompt_tokens if produced else 0,
            completion_tokens=self.completion_tokens,
            cost=cost,
            latency_ms=round((metering.clock.monotonic() - self._started) * 1000),
            status=status,
            error_code=error_code,
            created_at=metering.clock.now(),
            client_request_id=self.client_request_id,
        )


class HoldsInTurn:
    """CallHolds from a token budget book and a credit ledger asked one after the other: the
    in-process ones, where a second step costs no round trip."""

    def __init__(self, budgets: TokenBudgetBook, ledger: CreditLedger) -> None:
        self._budgets = budgets
        self._ledger = ledger

    async def take(
        self, key_id: str, budget: int, worst_tokens: int, account_id: str, worst_cost: int, spend_less: str
    ) -> tuple[TokenHold, Reservation]:
        hold = await self._budgets.hold(key_id, budget, worst_tokens)
        try:
            return hold, await self._ledger.reserve(account_id, worst_cost, spend_less)
        except BaseException:
            # Shielded: a call cancelled here must still give its tokens back.
            await asyncio.shield(self._budgets.settle(hold, 0))
            raise

    async def settle(self, hold: TokenHold, used: int, reservation: Reservation, cost: int) -> int:
        await self._budgets.settle(hold, used)
        return await self._ledger.settle(reservation, cost)


class Metering:
    """What every call's meter settles against."""

    def __init__(
        self,
        recorder: UsageRecorder,
        ledger: CreditLedger,
        holds: CallHolds,
        clock: Clock,
        telemetry: Telemetry | None = None,
        checkpoint_seconds: float = 2.0,
    ) -> None:
        self.recorder = recorder
        self.checkpoint_seconds = checkpoint_seconds
        # Set once the server ends the calls still running (Pipeline.stop_streams).
        self.shutting_down = False
        # Meters not yet exited: the usage writer closes only after the last one has recorded.
        self._open_calls = 0
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        recorder.count_calls(lambda: self._open_calls)
        self.ledger = ledger
        self.holds = holds
        self.clock = clock
        self.telemetry = telemetry or Telemetry()

    def call_opened(self) -> None:
        self._open_calls += 1
        self._all_closed.clear()

    def call_closed(self) -> None:
        self._open_calls -= 1
        if self._open_calls == 0:
            self._all_closed.set()

    async def quiesce(self, timeout: float) -> bool:
        """Waits (at most `timeout` seconds) until every opened call has recorded its row; whether all did."""
        try:
            async with asyncio.timeout(timeout):
                await self._all_closed.wait()
        except TimeoutError:
            return False
        return True

    def open(
        self, *, request_id: str, surface: str, status_of: Callable[[GatewayError], int], client_request_id: str = ""
    ) -> CallMeter:
        """A meter for one call; `status_of` is the status the surface shows for an error."""
        return CallMeter(
            self, request_id=request_id, surface=surface, status_of=status_of, client_request_id=client_request_id
        )
