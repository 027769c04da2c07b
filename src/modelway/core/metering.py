"""Per-call metering: whatever happens, each call settles its holds and leaves exactly one usage row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from modelway.config import ModelConfig
from modelway.core.accounting import UsageRecorder
from modelway.core.budgets import TokenHold
from modelway.core.clock import Clock
from modelway.core.directory import Caller
from modelway.core.ledger import Reservation
from modelway.core.state import CreditLedger, TokenBudgetBook
from modelway.errors import GatewayError
from modelway.store import UsageRecord

__all__ = ["CLIENT_CLOSED", "CallMeter", "Metering"]

# nginx's "client closed request": the caller went away before the end.
CLIENT_CLOSED = 499


class CallMeter:
    """Gathers what one call used while it runs; settles and records it once, on exit.

    The exit status comes from how the call ended: normally (200 unless
    `fail` was called for an error written into a stream), a GatewayError
    (the status the surface showed), cancellation by the client (499),
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
        self._reservation: Reservation | None = None
        self._hold: TokenHold | None = None
        self._status = 200
        self._error_code = ""

    def attribute(self, caller: Caller) -> None:
        """From here on the call, failed or not, counts against this caller's account."""
        self.caller = caller

    async def admit(
        self, caller: Caller, model: ModelConfig, prompt_tokens: int, worst_tokens: int, worst_cost: int
    ) -> None:
        """Holds the call's worst case against the key's daily token budget (BUDGET_EXCEEDED)
        and the account's credits (INSUFFICIENT_CREDITS) until the call settles. `model` is
        the first candidate: the one the row names until another answers."""
        metering = self._metering
        self.caller, self.model, self.prompt_tokens = caller, model, prompt_tokens
        budget = caller.key.daily_token_budget or caller.plan.daily_token_budget
        hold = await metering.budgets.hold(caller.key.id, budget, worst_tokens)
        try:
            self._reservation = await metering.ledger.reserve(caller.account.id, worst_cost)
        except BaseException:
            await metering.budgets.settle(hold, 0)
            raise
        self._hold = hold

    def attempting(self, model: ModelConfig) -> None:
        """The router is trying this model: the row names it, and it prices the call, if it answers."""
        self.model = model

    def fail(self, error: GatewayError) -> None:
        """Marks a call that ended in an error (also one written into a stream that had begun)."""
        self._status = self._status_of(error)
        self._error_code = error.reason.value

    async def __aenter__(self) -> CallMeter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, GatewayError):
            self.fail(exc)
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self._status, self._error_code = CLIENT_CLOSED, "client_closed"
        elif exc is not None:
            self._status, self._error_code = 500, "internal_error"
        # Shielded: a second cancellation must not leave a hold unsettled or a row unwritten.
        await asyncio.shield(self._settle())

    async def _settle(self) -> None:
        metering = self._metering
        charged = 0
        produced = self._status == 200 or self.completion_tokens > 0
        if self._reservation is not None:
            cost = self.model.cost(self.prompt_tokens, self.completion_tokens) if produced and self.model else 0
            charged = await metering.ledger.settle(self._reservation, cost)
            self._reservation = None
        if self._hold is not None:
            await metering.budgets.settle(self._hold, self.prompt_tokens + self.completion_tokens if produced else 0)
            self._hold = None
        metering.recorder.record(
            UsageRecord(
                request_id=self.request_id,
                account_id=self.caller.account.id if self.caller else "",
                key_id=self.caller.key.id if self.caller else "",
                surface=self.surface,
                model=self.model.id if self.model else "",
                provider=self.model.provider if self.model else "",
                prompt_tokens=self.prompt_tokens if produced else 0,
                completion_tokens=self.completion_tokens,
                cost=charged,
                latency_ms=round((metering.clock.monotonic() - self._started) * 1000),
                status=self._status,
                error_code=self._error_code,
                created_at=metering.clock.now(),
                client_request_id=self.client_request_id,
            )
        )


class Metering:
    """What every call's meter settles against."""

    def __init__(self, recorder: UsageRecorder, ledger: CreditLedger, budgets: TokenBudgetBook, clock: Clock) -> None:
        self.recorder = recorder
        self.ledger = ledger
        self.budgets = budgets
        self.clock = clock

    def open(
        self, *, request_id: str, surface: str, status_of: Callable[[GatewayError], int], client_request_id: str = ""
    ) -> CallMeter:
        """A meter for one call; `status_of` is the status the surface shows for an error."""
        return CallMeter(
            self, request_id=request_id, surface=surface, status_of=status_of, client_request_id=client_request_id
        )
