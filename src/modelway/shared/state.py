"""The shared hot state on Redis: rate limits, token budgets and credits, behind core.state's protocols.

Each check-and-take is one Lua script (shared/scripts.py) with the same rule
and the same refusal as the in-process versions (core/limits.py,
core/budgets.py, core/ledger.py), so callers see the same 429s and 402s
whether one process or many serve them. When Redis cannot be reached, or is
being rebuilt, a take is refused with 503 SHARED_STATE_UNAVAILABLE (never
admitted unmetered); giving back never fails (see shared/link.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from modelway.core.budgets import DAY_SECONDS, TokenHold, day_start, over_budget
from modelway.core.clock import Clock
from modelway.core.ledger import Reservation, insufficient
from modelway.core.limits import WINDOW_SECONDS, LimitRule, LimitState, refusal, window_of
from modelway.errors import GatewayError
from modelway.shared import scripts
from modelway.shared.link import SharedLink

__all__ = ["SharedBudgets", "SharedCallHolds", "SharedLedger", "SharedRateLimits"]


def _drop(counter: dict[str, int], name: str, amount: int) -> None:
    """Subtracts, forgetting a name that holds nothing any more (the registration stays small)."""
    left = counter.get(name, 0) - amount
    if left:
        counter[name] = left
    else:
        counter.pop(name, None)


class SharedRateLimits:
    """Per-key and global requests per minute, counted in Redis in fixed UTC minute windows."""

    def __init__(self, link: SharedLink, clock: Clock) -> None:
        self._link = link
        self._clock = clock

    async def acquire(self, *rules: LimitRule) -> tuple[LimitState, ...]:
        now = self._clock.now()
        window, reset_at = window_of(now)
        args: list[Any] = [window, 2 * WINDOW_SECONDS]
        for rule in rules:
            args += [rule.scope, rule.limit]
        scopes = [rule.scope for rule in rules]
        reply = await self._link.take(scripts.RATE_ACQUIRE, args, lambda reply: self._link.counted(window, scopes))
        if reply[0] == "LIMIT":
            raise refusal(rules[int(reply[1]) - 1], now)
        counts = zip(rules, reply[1:], strict=True)
        return tuple(LimitState(rule.limit, rule.limit - int(used), reset_at) for rule, used in counts)


class SharedBudgets:
    """Daily token budgets per key: today's use and the holds of calls under way, in Redis."""

    def __init__(self, link: SharedLink, clock: Clock) -> None:
        self._link = link
        self._clock = clock

    def load(self, day: int, used: dict[str, int]) -> None:
        """Nothing to load: a rebuild of the shared state reads today's use from the store."""

    async def hold(self, key_id: str, budget: int, worst_case: int) -> TokenHold:
        now = self._clock.now()
        args = [key_id, day_start(now), budget, worst_case]
        reply = await self._link.take(scripts.BUDGET_HOLD, args, lambda _: self.mirror_hold(key_id, worst_case))
        if reply[0] == "OVER":
            raise self.refusal(budget, reply, now)
        return TokenHold(key_id, worst_case)

    async def settle(self, hold: TokenHold, used: int) -> None:
        await self._link.give(scripts.BUDGET_SETTLE, self.settle_args(hold, used), lambda _: self.mirror_release(hold))

    # What the scripts that take or give tokens (also with credits: SharedCallHolds) share.

    def mirror_hold(self, key_id: str, tokens: int) -> None:
        """Redis took the tokens: this process holds them (what it registers again after a loss)."""
        self._link.tokens_held[key_id] += tokens

    def mirror_release(self, hold: TokenHold) -> None:
        """Given back, whether Redis heard it or not (the next registration tells it then)."""
        _drop(self._link.tokens_held, hold.key_id, hold.tokens)

    @staticmethod
    def refusal(budget: int, reply: list[Any], now: float) -> GatewayError:
        return over_budget(budget, int(reply[1]), int(reply[2]), now)

    def settle_args(self, hold: TokenHold, used: int) -> list[Any]:
        """BUDGET_SETTLE's arguments. Its id: one whose reply never came is counted by it once Redis
        answers (see SharedLink)."""
        day = day_start(self._clock.now())
        return [hold.key_id, day, hold.tokens, used, 2 * DAY_SECONDS, secrets.token_hex(8), self._link.op_seconds]


class SharedLedger:
    """Credit reservations and charges in Redis; the balance of record stays in the store.

    available = balance - held, where held is every process's reservations
    and charges not yet written. A charge moves from held to the balance just
    before the usage row carrying it is written (`writing`), and back if the
    write fails.
    """

    def __init__(self, link: SharedLink) -> None:
        self._link = link
        self.lock = asyncio.Lock()
        # What Redis last said each account has available (read only, for `credits_remaining`).
        self._available: dict[str, int] = {}
        # Undo scripts of failed writes still running (kept so that they are not collected).
        self._undoing: set[asyncio.Task[None]] = set()
        # The batch being written: the epoch its charges moved in, and when (see SharedLink.doubt).
        self._write: tuple[str, float] | None = None

    async def reload(self) -> None:
        """Nothing to re-read: balances live in Redis, and the operator's credits reach it directly."""

    def available(self, account_id: str) -> int:
        return self._available.get(account_id, 0)

    async def reserve(self, account_id: str, amount: int, spend_less: str) -> Reservation:
        await self.reserving(account_id, amount, spend_less, scripts.CREDIT_RESERVE, [account_id, amount])
        return Reservation(account_id, amount)

    async def settle(self, reservation: Reservation, cost: int) -> int:
        return await self._link.give(
            scripts.CREDIT_SETTLE,
            [reservation.account_id, reservation.amount, cost],
            lambda reply: self.settled(reservation, cost, reply),
        )

    # What the scripts that reserve or settle credits (also with tokens: SharedCallHolds) share.

    async def reserving(
        self,
        account_id: str,
        amount: int,
        spend_less: str,
        source: str,
        args: list[Any],
        also: Callable[[], None] = lambda: None,
    ) -> list[Any]:
        """Runs a take that reserves `amount` of the account's credits (CREDIT_RESERVE, or CALL_ADMIT
        with `also` mirroring what else it took): an account created after the last rebuild has its
        balance read from the store once, and the take runs again; INSUFFICIENT_CREDITS when short.
        Any other reply (OK, or a refusal of what else the take holds) is the caller's."""
        held = self._link.credits_held

        def taken(reply: list[Any]) -> None:
            also()
            held[account_id] += amount
            self._available[account_id] = int(reply[1])

        for _ in range(2):
            reply = await self._link.take(source, args, taken)
            if reply[0] == "NOACCOUNT":
                # Created after the last rebuild: its balance comes from the store, once.
                await self._link.seed(account_id)
                continue
            if reply[0] == "SHORT":
                self._available[account_id] = int(reply[1])
                raise insufficient(amount, int(reply[1]), spend_less)
            return reply
        raise self._link.unavailable()

    def settled(self, reservation: Reservation, cost: int, reply: list[Any] | None) -> int:
        """The charge of a settled reservation, as Redis made it ({'OK', charged, available after}),
        or, without its word, what was reserved at most: never beyond the hold."""
        account = reservation.account_id
        if reply is not None and reply[0] == "OK":
            charged = int(reply[1])
            self._available[account] = int(reply[2])
        else:
            charged = max(0, min(cost, reservation.amount))
        _drop(self._link.credits_held, account, reservation.amount - charged)
        return charged

    async def draw(self, reservation: Reservation, amount: int) -> tuple[Reservation, int]:
        # Held either way (reserved, then charged and not written): nothing changes in Redis.
        charged = max(0, min(amount, reservation.amount))
        return Reservation(reservation.account_id, reservation.amount - charged), charged

    async def refund(self, account_id: str, amount: int) -> None:
        def given(reply: list[Any] | None) -> None:
            _drop(self._link.credits_held, account_id, amount)

        # A charge not written yet, given back: held drops by it (a settle of `amount` costing nothing).
        await self._link.give(scripts.CREDIT_SETTLE, [account_id, amount, 0], given)

    async def writing(self, charges: Mapping[str, int], *, final: bool = False) -> None:
        """Moves the charges from held to the balance in Redis before they are written to the store."""
        pending = {account: amount for account, amount in charges.items() if amount}
        if not pending:
            return
        # The move's id: a move whose reply is lost is settled by it, never made twice (see SharedLink).
        args: list[Any] = [secrets.token_hex(8), 1]
        for account, amount in pending.items():
            args += [account, amount]

        # Before the script: a reply delayed (a stalled event loop) must not hide a straddle (doubt).
        at = time.monotonic()

        def taken(reply: list[Any]) -> None:
            epoch = str(reply[1])
            moving = self._link.credits_moving.setdefault(epoch, Counter())
            for account, amount in pending.items():
                _drop(self._link.credits_held, account, amount)
                moving[account] += amount
            self._write = (epoch, at)

        try:
            await self._link.take(scripts.CREDIT_CHANGE, args, taken)
        except Exception:
            if not final:
                raise
            # Shutting down: the rows are written all the same; Redis keeps counting these charges
            # as held (never as spendable) until its next rebuild reads them from the store.
            self._link.freeze()

    def write_failed(self, charges: Mapping[str, int]) -> None:
        started, self._write = self._write, None
        if started is None:
            return
        pending = {account: amount for account, amount in charges.items() if amount}
        args: list[Any] = [secrets.token_hex(8), -1]
        for account, amount in pending.items():
            args += [account, amount]

        epoch = started[0]

        def given(reply: list[Any] | None) -> None:
            # Unwritten again: held by this process, as before `writing`. Without Redis's word (also
            # in another epoch) the next registration files it as held.
            self._arrived(epoch, pending)
            for account, amount in pending.items():
                self._link.credits_held[account] += amount

        # Undone only in the epoch the charges moved in: a later one was rebuilt from a store without
        # them (its balance never had them taken off), where holding them again is the whole undo.
        task = asyncio.ensure_future(self._link.give(scripts.CREDIT_CHANGE, args, given, epoch=epoch))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    def charges_written(self, charges: Mapping[str, int]) -> None:
        started, self._write = self._write, None
        if started is None:
            return
        epoch, at = started
        # Registered as held in a later epoch, they stay so there until the rebuild the doubt below
        # forces (that epoch may have read the store before the rows).
        self._arrived(epoch, charges)
        if time.monotonic() - at >= self._link.quiet_seconds / 2:
            self._link.doubt(epoch)

    def _arrived(self, epoch: str, charges: Mapping[str, int]) -> None:
        """The write of charges that moved in `epoch` ended: they are moving no more."""
        moving = self._link.credits_moving.get(epoch)
        if moving is None:
            return
        for account, amount in charges.items():
            _drop(moving, account, amount)
        if not moving:
            del self._link.credits_moving[epoch]


class SharedCallHolds:
    """A call's token hold and credit reservation in one script each way (CALL_ADMIT, CALL_SETTLE):
    two round trips to Redis per call fewer than asking SharedBudgets and SharedLedger in turn, with
    their rules, their refusals and their memory of what this process holds."""

    def __init__(self, link: SharedLink, clock: Clock, budgets: SharedBudgets, ledger: SharedLedger) -> None:
        self._link = link
        self._clock = clock
        self._budgets = budgets
        self._ledger = ledger

    async def take(
        self, key_id: str, budget: int, worst_tokens: int, account_id: str, worst_cost: int, spend_less: str
    ) -> tuple[TokenHold, Reservation]:
        now = self._clock.now()
        reply = await self._ledger.reserving(
            account_id,
            worst_cost,
            spend_less,
            scripts.CALL_ADMIT,
            [key_id, day_start(now), budget, worst_tokens, account_id, worst_cost],
            also=lambda: self._budgets.mirror_hold(key_id, worst_tokens),
        )
        if reply[0] == "OVER":
            raise self._budgets.refusal(budget, reply, now)
        return TokenHold(key_id, worst_tokens), Reservation(account_id, worst_cost)

    async def settle(self, hold: TokenHold, used: int, reservation: Reservation, cost: int) -> int:
        def given(reply: list[Any] | None) -> int:
            self._budgets.mirror_release(hold)
            return self._ledger.settled(reservation, cost, reply)

        args = [*self._budgets.settle_args(hold, used), reservation.account_id, reservation.amount, cost]
        return await self._link.give(scripts.CALL_SETTLE, args, given)
