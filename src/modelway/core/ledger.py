"""Credit balances: reserve the worst case before a call, settle the real cost after."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from modelway.errors import GatewayError, Reason
from modelway.frozen import slot_init
from modelway.store import Store

__all__ = ["Ledger", "Reservation", "insufficient"]


@slot_init
@dataclass(frozen=True, slots=True)
class Reservation:
    account_id: str
    amount: int  # micro-credits held back from the balance


def insufficient(amount: int, available: int, spend_less: str) -> GatewayError:
    """The refusal of a call whose worst case costs more than the account has, with the surface's advice."""
    return GatewayError(
        Reason.INSUFFICIENT_CREDITS,
        "You exceeded your current quota: this call may cost up to "
        f"{amount / 1e6:g} credits and the account has {max(0, available) / 1e6:g}. " + spend_less,
    )


class Ledger:
    """Balances in memory, coherent with the store.

    available = stored balance - charges not yet written - reservations.
    `reserve` and `settle` never suspend, so concurrent calls on one event
    loop cannot both take the last credits: the balance never goes negative.
    A charge is written with the usage row that carries it (its `cost`), in
    the row's transaction (see UsageRecorder): the recorder reports the sums
    it committed through `charges_written`, so a charge is never written
    without its row, nor twice. `reload` picks up credits another process added.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._stored: dict[str, int] = {}
        self._unwritten: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        # Held while a batch of charges is being written or balances re-read,
        # so a re-read never counts a charge twice or not at all.
        self.lock = asyncio.Lock()

    async def reload(self) -> None:
        async with self.lock:
            self._stored = await self._store.balances()

    def available(self, account_id: str) -> int:
        return self._stored.get(account_id, 0) - self._unwritten[account_id] - self._reserved[account_id]

    async def reserve(self, account_id: str, amount: int, spend_less: str) -> Reservation:
        if amount > 0 and self.available(account_id) < amount:
            raise insufficient(amount, self.available(account_id), spend_less)
        self._reserved[account_id] += amount
        return Reservation(account_id, amount)

    async def settle(self, reservation: Reservation, cost: int) -> int:
        """Releases the reservation and charges the real cost; returns what was charged.

        The charge counts against the balance at once and reaches the store
        with the usage row whose `cost` it is."""
        self._reserved[reservation.account_id] -= reservation.amount
        charged = max(0, min(cost, self.available(reservation.account_id)))
        self._unwritten[reservation.account_id] += charged
        return charged

    async def draw(self, reservation: Reservation, amount: int) -> tuple[Reservation, int]:
        """Turns part of a reservation into a charge now (a long stream's checkpoint).

        Returns what is left reserved and what was charged: at most what was reserved."""
        charged = max(0, min(amount, reservation.amount))
        self._reserved[reservation.account_id] -= charged
        self._unwritten[reservation.account_id] += charged
        return Reservation(reservation.account_id, reservation.amount - charged), charged

    async def refund(self, account_id: str, amount: int) -> None:
        """Gives back a charge already made (it reaches the store as a negative charge with its row)."""
        self._unwritten[account_id] -= amount

    async def writing(self, charges: Mapping[str, int], *, final: bool = False) -> None:
        """Charges about to be written: nothing to do here (memory changes once they are written)."""

    def write_failed(self, charges: Mapping[str, int]) -> None:
        """Charges whose write failed: they stay unwritten, nothing to undo here."""

    def charges_written(self, charges: Mapping[str, int]) -> None:
        """Charges the store now holds (call under `lock`, in the same turn as the commit is seen)."""
        for account, amount in charges.items():
            self._unwritten[account] -= amount
            self._stored[account] = max(0, self._stored.get(account, 0) - amount)
