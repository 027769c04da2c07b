"""PostgreSQL store on asyncpg: a pool, a versioned schema migrated on start, the same semantics as SQLite."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from modelway.config import redact_url
from modelway.store.base import ConversationChanged, CreditChange, StoreUnavailable
from modelway.store.records import (
    AccountRecord,
    ChatMessageRecord,
    ConversationRecord,
    DailyUsage,
    KeyRecord,
    UsageRecord,
)
from modelway.store.schema import MIGRATION_LOCK, MIGRATIONS

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

# Failures that mean "the server is not there (now)": down, restarting, refusing, cut mid-query.
# Everything else (a constraint, a bug in our SQL) is raised as it is.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# Connecting gives up after this long, so a dead server answers callers in seconds, not a minute.
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 30.0

_USAGE_COLUMNS = [field.name for field in dataclasses.fields(UsageRecord)]
_USAGE_TYPES = {
    "request_id": "text",
    "account_id": "text",
    "key_id": "text",
    "surface": "text",
    "model": "text",
    "provider": "text",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "cost": "bigint",
    "latency_ms": "bigint",
    "status": "integer",
    "error_code": "text",
    "created_at": "double precision",
    "client_request_id": "text",
}
# One statement for a batch: upsert the rows by request id, and charge each account what its rows'
# costs moved by. The charge is derived from the rows, not passed in, so a batch written again
# (its commit was cut before the acknowledgement reached us) charges nothing twice.
_RECORD_USAGE = (
    "WITH batch AS (SELECT * FROM unnest("
    + ", ".join(f"${n}::{_USAGE_TYPES[name]}[]" for n, name in enumerate(_USAGE_COLUMNS, 1))
    + f") AS t({', '.join(_USAGE_COLUMNS)})),"
    " before AS (SELECT u.request_id, u.cost FROM usage u JOIN batch b USING (request_id)),"
    f" written AS (INSERT INTO usage ({', '.join(_USAGE_COLUMNS)}) SELECT * FROM batch"
    " ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _USAGE_COLUMNS if name != "request_id")
    + " RETURNING request_id, account_id, cost),"
    " moved AS (SELECT w.account_id, SUM(w.cost - COALESCE(b.cost, 0)) AS amount"
    " FROM written w LEFT JOIN before b USING (request_id) GROUP BY w.account_id)"
    " UPDATE accounts a SET credits = GREATEST(0, a.credits - m.amount)"
    " FROM moved m WHERE a.id = m.account_id AND m.amount <> 0"
)
_KEY_COLUMNS = [field.name for field in dataclasses.fields(KeyRecord)]
_CONVERSATION = (
    "SELECT c.id, c.account_id, c.title, c.model, c.created_at, c.updated_at,"
    " (SELECT COUNT(*) FROM conversation_messages m WHERE m.conversation_id = c.id) FROM conversations c"
)
# A conversation's title: the start of its first message, on one line.
_TITLE_CHARS = 80


def _key_values(key: KeyRecord) -> list[Any]:
    row = dataclasses.astuple(key)
    return [list(value) if isinstance(value, tuple) else value for value in row]


def _key_from_row(row: Mapping[str, Any]) -> KeyRecord:
    values = dict(row)
    for name in ("permissions", "allowed_models"):
        values[name] = tuple(values[name] or ())
    return KeyRecord(**values)


def _title(question: str) -> str:
    line = " ".join(question.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "\u2026"


class PostgresStore:
    """A connection pool; every call borrows a connection for one statement or one transaction.

    Connection failures become StoreUnavailable (a 503 for callers; the usage
    recorder keeps its rows and retries). The URL holds a password: it is
    never logged or put in an error, only its redacted form.
    """

    def __init__(self, url: str, *, max_connections: int = 10) -> None:
        self._url = url
        self._shown = redact_url(url)
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r})"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._max_connections,
                timeout=_CONNECT_TIMEOUT,
                command_timeout=_COMMAND_TIMEOUT,
            )
        except _UNREACHABLE as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {self._shown}: {type(exc).__name__}") from None
        except asyncpg.exceptions.PostgresError as exc:
            # Wrong password, no such database: the server's words, which never quote the password.
            raise StoreUnavailable(f"PostgreSQL at {self._shown} refused the connection: {exc}") from None
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        log.info("store: PostgreSQL at %s", self._shown)

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(*_UNREACHABLE):
                await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        try:
            async with self._pool.acquire() as connection:
                yield connection
        except _UNREACHABLE as exc:
            raise StoreUnavailable() from exc

    async def _migrate(self) -> None:
        """Applies the migrations this database lacks, in order, each in its own transaction.

        An advisory lock around the whole: several processes starting at once
        run them one after the other, and each later one finds nothing to do.
        """
        async with self._connection() as connection:
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)")
                current = await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                known = MIGRATIONS[-1][0]
                if current > known:
                    raise RuntimeError(
                        f"the store's schema is version {current}, newer than this modelway knows ({known}):"
                        " upgrade modelway"
                    )
                for version, statements in MIGRATIONS:
                    if version <= current:
                        continue
                    async with connection.transaction():
                        for statement in statements:
                            await connection.execute(statement)
                        await connection.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
                    log.info("store: schema migrated to version %d", version)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def schema_version(self) -> int:
        async with self._connection() as connection:
            return int(await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def data_version(self) -> int:
        """A revision counter that triggers move on every committed change of accounts or keys
        (last-used times aside): it changes atomically with the data it announces."""
        async with self._connection() as connection:
            return int(await connection.fetchval("SELECT value FROM data_revision"))

    # Accounts and balances.

    async def insert_account(self, account: AccountRecord, credits: int) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO accounts (id, name, plan, credits, created_at) VALUES ($1, $2, $3, $4, $5)",
                account.id,
                account.name,
                account.plan,
                credits,
                account.created_at,
            )

    async def list_accounts(self) -> list[AccountRecord]:
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT id, name, plan, created_at FROM accounts ORDER BY created_at, id")
        return [AccountRecord(*row) for row in rows]

    async def balances(self) -> dict[str, int]:
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT id, credits FROM accounts")
        return {row[0]: int(row[1]) for row in rows}

    async def balance(self, account_id: str) -> int | None:
        async with self._connection() as connection:
            credits = await connection.fetchval("SELECT credits FROM accounts WHERE id = $1", account_id)
        return None if credits is None else int(credits)

    async def add_credits(self, account_id: str, amount: int) -> CreditChange | None:
        async with self._connection() as connection, connection.transaction():
            # Servers without Redis re-read balances when the revision moves (usage rows do not move it).
            await connection.execute("UPDATE data_revision SET value = value + 1")
            # The old balance from the row the UPDATE locked (a sub-select alone could read an older one).
            row = await connection.fetchrow(
                "UPDATE accounts AS a SET credits = GREATEST(0, a.credits + $1) "
                "FROM (SELECT id, credits FROM accounts WHERE id = $2 FOR UPDATE) AS old "
                "WHERE a.id = old.id RETURNING old.credits AS before, a.credits AS after",
                amount,
                account_id,
            )
        return None if row is None else CreditChange(int(row["before"]), int(row["after"]))

    # Keys.

    async def insert_key(self, key: KeyRecord) -> None:
        marks = ", ".join(f"${n}" for n in range(1, len(_KEY_COLUMNS) + 1))
        async with self._connection() as connection:
            await connection.execute(
                f"INSERT INTO api_keys ({', '.join(_KEY_COLUMNS)}) VALUES ({marks})", *_key_values(key)
            )

    async def replace_key(self, key: KeyRecord) -> None:
        sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(_KEY_COLUMNS, 1) if name != "id")
        async with self._connection() as connection:
            await connection.execute(f"UPDATE api_keys SET {sets} WHERE id = $1", *_key_values(key))

    async def list_keys(self) -> list[KeyRecord]:
        async with self._connection() as connection:
            rows = await connection.fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM api_keys ORDER BY created_at, id")
        return [_key_from_row(row) for row in rows]

    async def delete_key(self, key_id: str) -> bool:
        async with self._connection() as connection:
            status = await connection.execute("DELETE FROM api_keys WHERE id = $1", key_id)
        return bool(status != "DELETE 0")

    # Usage.

    async def record_calls(
        self, rows: Sequence[UsageRecord], last_used: Mapping[str, int], charges: Mapping[str, int]
    ) -> None:
        """Writes usage rows, the credits they cost and last-used times in one transaction.

        Each account is charged what its rows' costs moved by, which is `charges`
        when the batch is new, and nothing when it was already committed.
        """
        # One row per request id: a later state of a call (its end after a checkpoint) replaces the earlier.
        latest = list({row.request_id: row for row in rows}.values())
        columns = [[getattr(row, name) for row in latest] for name in _USAGE_COLUMNS]
        async with self._connection() as connection, connection.transaction():
            if last_used:
                await connection.execute(
                    "UPDATE api_keys k SET last_used_at = t.at"
                    " FROM unnest($1::text[], $2::bigint[]) AS t(id, at)"
                    " WHERE k.id = t.id AND (k.last_used_at IS NULL OR k.last_used_at < t.at)",
                    list(last_used),
                    list(last_used.values()),
                )
            if latest:
                await connection.execute(_RECORD_USAGE, *columns)

    async def tokens_since(self, since: float) -> dict[str, int]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM usage"
                " WHERE created_at >= $1 AND key_id <> '' GROUP BY key_id",
                since,
            )
        return {row[0]: int(row[1]) for row in rows}

    async def daily_usage(self, account_id: str, start: float, end: float) -> list[DailyUsage]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, COUNT(*),"
                " SUM(prompt_tokens), SUM(completion_tokens), SUM(cost)"
                " FROM usage WHERE account_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1 ORDER BY 1",
                account_id,
                start,
                end,
            )
        return [DailyUsage(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4])) for row in rows]

    # chat/send conversations.

    async def conversation(self, account_id: str, conversation_id: int) -> ConversationRecord | None:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                _CONVERSATION + " WHERE c.id = $1 AND c.account_id = $2", conversation_id, account_id
            )
        return None if row is None else ConversationRecord(*row)

    async def conversations(self, account_id: str, offset: int, limit: int) -> tuple[list[ConversationRecord], int]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                _CONVERSATION + " WHERE c.account_id = $1 ORDER BY c.updated_at DESC, c.id DESC LIMIT $2 OFFSET $3",
                account_id,
                limit,
                offset,
            )
            total = await connection.fetchval("SELECT COUNT(*) FROM conversations WHERE account_id = $1", account_id)
        return [ConversationRecord(*row) for row in rows], int(total)

    async def conversation_messages(self, conversation_id: int) -> list[ChatMessageRecord]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, conversation_id, role, content, model, tokens, created_at FROM conversation_messages"
                " WHERE conversation_id = $1 ORDER BY id",
                conversation_id,
            )
        return [ChatMessageRecord(*row) for row in rows]

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
        async with self._connection() as connection, connection.transaction():
            if conversation_id is None:
                target = await connection.fetchval(
                    "INSERT INTO conversations (account_id, title, model, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $4) RETURNING id",
                    account_id,
                    _title(question),
                    model,
                    at,
                )
            else:
                target = await connection.fetchval(
                    "UPDATE conversations SET model = $1, updated_at = $2 WHERE id = $3 AND account_id = $4"
                    " RETURNING id",
                    model,
                    at,
                    conversation_id,
                    account_id,
                )
                if target is None:
                    return None
                # The UPDATE holds the conversation's row lock until commit: a concurrent exchange waits
                # for it here, then (READ COMMITTED: each statement sees what committed before it)
                # finds this one's messages after the one it was built on.
                if after is not None and after != await connection.fetchval(
                    "SELECT COALESCE(MAX(id), 0) FROM conversation_messages WHERE conversation_id = $1", target
                ):
                    raise ConversationChanged()
            insert = (
                "INSERT INTO conversation_messages (conversation_id, role, content, model, tokens, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
            )
            await connection.execute(insert.removesuffix(" RETURNING id"), target, "user", question, model, 0, at)
            reply = await connection.fetchval(insert, target, "assistant", answer, model, tokens, at)
        return int(target), int(reply)

    async def forget_exchange(self, conversation_id: int, answer_id: int) -> None:
        async with self._connection() as connection, connection.transaction():
            # The answer and the question stored with it: the latest user message before the answer
            # (exchanges on one conversation are stored one at a time, so nothing else lies between them).
            await connection.execute(
                "DELETE FROM conversation_messages WHERE conversation_id = $1 AND id IN ($2,"
                " (SELECT MAX(id) FROM conversation_messages"
                "  WHERE conversation_id = $1 AND id < $2 AND role = 'user'))",
                conversation_id,
                answer_id,
            )
            left = await connection.fetchrow(
                "SELECT model, created_at FROM conversation_messages WHERE conversation_id = $1"
                " ORDER BY id DESC LIMIT 1",
                conversation_id,
            )
            if left is None:
                await connection.execute("DELETE FROM conversations WHERE id = $1", conversation_id)
            else:
                await connection.execute(
                    "UPDATE conversations SET model = $1, updated_at = $2 WHERE id = $3",
                    left["model"],
                    left["created_at"],
                    conversation_id,
                )
