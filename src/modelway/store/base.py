"""The store interface every part types against: SQLite (embedded default) and PostgreSQL implement it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from modelway.errors import GatewayError, Reason
from modelway.store.records import (
    AccountRecord,
    ChatMessageRecord,
    ConversationRecord,
    DailyUsage,
    KeyRecord,
    UsageRecord,
)

__all__ = ["STORE_RETRY_AFTER", "ConversationChanged", "CreditChange", "Store", "StoreUnavailable"]


# What a caller is told to wait while the store is unreachable: about how long a restart takes.
STORE_RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class CreditChange:
    """An account's balance before and after credits were added or removed (never below zero)."""

    before: int
    after: int

    @property
    def applied(self) -> int:
        """What the store really changed: less than asked when a removal met the zero floor."""
        return self.after - self.before


class StoreUnavailable(GatewayError):
    """The store cannot be reached (PostgreSQL down, connection refused): a 503 the caller may retry.

    Raised in place of the driver's own connection errors, whose text may
    quote the connection string; this one never does. Being a GatewayError,
    every surface answers it as a clean 503 with Retry-After.
    """

    def __init__(self, message: str = "The usage store is unreachable; try again shortly.") -> None:
        super().__init__(Reason.STORE_UNAVAILABLE, message, retry_after=STORE_RETRY_AFTER)


class ConversationChanged(GatewayError):
    """`save_exchange` found a message after the one the answer was built on: another exchange on the
    conversation (another server process's) was stored meanwhile. Nothing was written."""

    def __init__(self) -> None:
        super().__init__(
            Reason.CONVERSATION_CHANGED,
            "Another message to this conversation was answered while this one was; it was not stored "
            "or charged. Send it again to continue the conversation as it is now.",
            param="conversation_id",
        )


class Store(Protocol):
    """Accounts, keys, balances, usage rows and conversations, persisted.

    Every method is a coroutine and never blocks the event loop. Writes that
    belong together (a batch of usage rows with their charges) commit in one
    transaction. Balances never go below zero.
    """

    async def open(self) -> None:
        """Connects and creates or migrates the schema; safe when several processes open at once."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def data_version(self) -> int:
        """A number that changes whenever another process changed accounts, keys or balances."""
        ...

    # Accounts and balances.

    async def insert_account(self, account: AccountRecord, credits: int) -> None: ...

    async def list_accounts(self) -> list[AccountRecord]: ...

    async def balances(self) -> dict[str, int]:
        """Every account's stored balance, in micro-credits."""
        ...

    async def balance(self, account_id: str) -> int | None:
        """One account's stored balance, in micro-credits; None if no such account (one row read, not all)."""
        ...

    async def add_credits(self, account_id: str, amount: int) -> CreditChange | None:
        """Adds (or removes, never below zero) credits; the balance before and after, None if no such account."""
        ...

    # Keys.

    async def insert_key(self, key: KeyRecord) -> None: ...

    async def replace_key(self, key: KeyRecord) -> None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def delete_key(self, key_id: str) -> bool:
        """Whether a key was deleted."""
        ...

    # Usage.

    async def record_calls(
        self, rows: Sequence[UsageRecord], last_used: Mapping[str, int], charges: Mapping[str, int]
    ) -> None:
        """Upserts usage rows by request id, charges accounts (never below zero) and moves keys'
        last-used times forward, all in one transaction."""
        ...

    async def tokens_since(self, since: float) -> dict[str, int]:
        """Tokens per key since a moment (the start of the UTC day, for budgets)."""
        ...

    async def daily_usage(self, account_id: str, start: float, end: float) -> list[DailyUsage]:
        """Per UTC day in [start, end), for one account."""
        ...

    # chat/send conversations. Every read names the account: another account's conversation is none.

    async def conversation(self, account_id: str, conversation_id: int) -> ConversationRecord | None: ...

    async def conversations(self, account_id: str, offset: int, limit: int) -> tuple[list[ConversationRecord], int]:
        """One page of an account's conversations, the latest first, and how many it has in all."""
        ...

    async def conversation_messages(self, conversation_id: int) -> list[ChatMessageRecord]:
        """A conversation's messages, oldest first."""
        ...

    async def save_exchange(
        self,
        account_id: str,
        conversation_id: int | None,
        model: str,
        question: str,
        answer: str,
        tokens: int,
        at: float,
        after: int | None = None,
    ) -> tuple[int, int] | None:
        """Adds a question and its answer to a conversation (a new one when None) in one transaction;
        (conversation id, answer's message id), or None when the conversation is not the account's.

        `after` is the id of the conversation's last message the answer was built on (0: none): when
        another message follows it by now, nothing is written and ConversationChanged is raised, so
        exchanges on one conversation are stored in order whichever process answered them."""
        ...

    async def forget_exchange(self, conversation_id: int, answer_id: int) -> None:
        """Takes back an exchange `save_exchange` stored whose answer never reached its caller, in one
        transaction: the answer, the question before it, and the conversation too when nothing else is
        left in it (otherwise its model and time become its last remaining message's)."""
        ...
