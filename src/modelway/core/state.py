"""The shared hot state every call checks and takes from, as async protocols.

Today one process keeps it in memory (limits.RateLimiter, ledger.Ledger,
budgets.TokenBudgets, directory.Directory); across processes it moves to a
shared store, behind these same calls. Each check-and-take is atomic: two
calls racing for the last unit cannot both get it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from modelway.core.budgets import TokenHold
from modelway.core.directory import Caller
from modelway.core.ledger import Reservation
from modelway.core.limits import LimitRule, LimitState

__all__ = ["CallHolds", "CreditLedger", "KeyDirectory", "RateLimits", "RecordedLedger", "TokenBudgetBook"]


class RateLimits(Protocol):
    async def acquire(self, *rules: LimitRule) -> tuple[LimitState, ...]:
        """Counts one request against every rule, or none of them (GatewayError RATE_LIMITED)."""
        ...


class CreditLedger(Protocol):
    async def reserve(self, account_id: str, amount: int, spend_less: str) -> Reservation:
        """Holds `amount` micro-credits back (GatewayError INSUFFICIENT_CREDITS when short, ending with
        `spend_less`: the surface's advice on what to lower)."""
        ...

    async def settle(self, reservation: Reservation, cost: int) -> int:
        """Releases the hold and charges the real cost, never beyond the balance; returns the charge."""
        ...

    async def draw(self, reservation: Reservation, amount: int) -> tuple[Reservation, int]:
        """Charges part of a hold now; returns the hold that is left and the charge."""
        ...

    async def refund(self, account_id: str, amount: int) -> None:
        """Gives back a charge made by `settle` or `draw`."""
        ...

    def available(self, account_id: str) -> int:
        """Read only: what the account may still spend, as this process sees it now (no I/O)."""
        ...


class RecordedLedger(CreditLedger, Protocol):
    """A ledger as the usage writer sees it: charges move from held to written with their rows."""

    # Held while a batch of charges is written or balances re-read.
    lock: asyncio.Lock

    async def reload(self) -> None: ...

    async def writing(self, charges: Mapping[str, int], *, final: bool = False) -> None:
        """Before the write: GatewayError when the charges cannot be accounted for now (the rows wait),
        unless `final` (shutdown: the rows are written whatever happens)."""
        ...

    def write_failed(self, charges: Mapping[str, int]) -> None: ...

    def charges_written(self, charges: Mapping[str, int]) -> None: ...


class TokenBudgetBook(Protocol):
    async def hold(self, key_id: str, budget: int, worst_case: int) -> TokenHold:
        """Holds a call's worst case against the key's day (GatewayError BUDGET_EXCEEDED when spent)."""
        ...

    async def settle(self, hold: TokenHold, used: int) -> None: ...


class CallHolds(Protocol):
    """A call's hold on its key's daily tokens and its reservation of its account's credits, taken
    together and settled together: one round trip each where the state is shared."""

    async def take(
        self, key_id: str, budget: int, worst_tokens: int, account_id: str, worst_cost: int, spend_less: str
    ) -> tuple[TokenHold, Reservation]:
        """Both, or neither: BUDGET_EXCEEDED first, then INSUFFICIENT_CREDITS (see their protocols)."""
        ...

    async def settle(self, hold: TokenHold, used: int, reservation: Reservation, cost: int) -> int:
        """Releases both, counting `used` tokens and charging the real cost; returns the charge."""
        ...


class KeyDirectory(Protocol):
    async def authenticate(self, secret: str) -> Caller:
        """The caller a secret belongs to (GatewayError 401 reasons otherwise)."""
        ...
