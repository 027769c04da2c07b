"""SQLite store on one dedicated thread, so no query ever runs on the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import operator
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from modelway.config import SQLITE_SYNCHRONOUS
from modelway.store.base import ConversationChanged, CreditChange
from modelway.store.records import (
    AccountRecord,
    ChatMessageRecord,
    ConversationRecord,
    DailyUsage,
    KeyRecord,
    UsageRecord,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

_USAGE_COLUMNS = [field.name for field in dataclasses.fields(UsageRecord)]
# A row's values in column order. dataclasses.astuple deep-copies every field (about 40 us a row,
# on the store thread, for every call); the fields are plain values, so a getter does.
_usage_values = operator.attrgetter(*_USAGE_COLUMNS)
# sqlite-utils' insert_all commits on its own; a batch must commit once, with
# its charges and last-used updates, so it is plain SQL in one transaction.
# One row per call: a later state of the call (a stream's checkpoint, then its
# end) rewrites the row under the same request id.
_INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(_USAGE_COLUMNS)}) VALUES ({', '.join('?' for _ in _USAGE_COLUMNS)})"
    f" ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _USAGE_COLUMNS if name != "request_id")
)
_JSON_LISTS = ("permissions", "allowed_models")


def _key_row(key: KeyRecord) -> dict[str, Any]:
    row = dataclasses.asdict(key)
    for name in _JSON_LISTS:
        row[name] = json.dumps(list(row[name]))
    row["is_enabled"] = int(key.is_enabled)
    return row


def _key_from_row(row: Mapping[str, Any]) -> KeyRecord:
    values = dict(row)
    for name in _JSON_LISTS:
        values[name] = tuple(json.loads(values[name] or "[]"))
    values["is_enabled"] = bool(values["is_enabled"])
    return KeyRecord(**values)


class SqliteStore:
    """All access goes through one worker thread: sqlite3 connections are not
    thread-safe and SQLite has one writer anyway. Callers await the result."""

    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f'synchronous must be "full" or "normal", got {synchronous!r}')
        self._path = str(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelway-store")
        self._db: sqlite_utils.Database | None = None

    async def _run(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        if self._db is None:
            raise RuntimeError("store is not open")
        return fn(self._db)

    async def open(self) -> None:
        def _open() -> None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self._path, isolation_level=None)
            connection.execute("PRAGMA busy_timeout = 5000")
            db = sqlite_utils.Database(connection)
            if self._path != ":memory:":
                db.enable_wal()
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._db = db
            self._migrate(db)

        await asyncio.get_running_loop().run_in_executor(self._executor, _open)

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @staticmethod
    def _migrate(db: sqlite_utils.Database) -> None:
        db.table("accounts").create(
            {"id": str, "name": str, "plan": str, "credits": int, "created_at": int},
            pk="id",
            not_null={"name", "plan", "credits", "created_at"},
            defaults={"credits": 0},
            if_not_exists=True,
        )
        db.table("api_keys").create(
            {
                "id": str,
                "account_id": str,
                "name": str,
                "secret_hash": str,
                "hint": str,
                "created_at": int,
                "permissions": str,
                "expires_at": int,
                "is_enabled": int,
                "last_used_at": int,
                "rate_limit": int,
                "daily_token_budget": int,
                "allowed_models": str,
            },
            pk="id",
            not_null={"account_id", "name", "secret_hash", "created_at", "is_enabled"},
            foreign_keys=[("account_id", "accounts", "id")],
            if_not_exists=True,
        )
        db.table("api_keys").create_index(["secret_hash"], unique=True, if_not_exists=True)
        db.table("api_keys").create_index(["account_id"], if_not_exists=True)
        db.table("usage").create(
            {
                "id": int,
                "request_id": str,
                "account_id": str,
                "key_id": str,
                "surface": str,
                "model": str,
                "provider": str,
                "prompt_tokens": int,
                "completion_tokens": int,
                "cost": int,
                "latency_ms": int,
                "status": int,
                "error_code": str,
                "created_at": float,
                "client_request_id": str,
            },
            pk="id",
            if_not_exists=True,
        )
        # Upgrades of stores made by earlier versions, in one transaction so that two processes
        # opening the same old store (the CLI and the server) cannot both try them.
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in db.conn.execute("PRAGMA table_info(usage)")}
            if "client_request_id" not in columns:
                db.conn.execute("ALTER TABLE usage ADD COLUMN client_request_id TEXT NOT NULL DEFAULT ''")
            # Request ids were once the client's and could repeat: all rows but the first of an id
            # get their row number appended, again until no two rows share one.
            while db.conn.execute("SELECT 1 FROM usage GROUP BY request_id HAVING COUNT(*) > 1 LIMIT 1").fetchone():
                db.conn.execute(
                    "UPDATE usage SET request_id = request_id || '-' || id"
                    " WHERE id NOT IN (SELECT MIN(id) FROM usage GROUP BY request_id)"
                )
            db.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS usage_request_id ON usage (request_id)")
        db.table("usage").create_index(["account_id", "created_at"], if_not_exists=True)
        db.table("usage").create_index(["key_id", "created_at"], if_not_exists=True)
        # chat/send conversations, apart from every other surface's calls (which keep no text).
        db.table("conversations").create(
            {"id": int, "account_id": str, "title": str, "model": str, "created_at": float, "updated_at": float},
            pk="id",
            not_null={"account_id", "title", "model", "created_at", "updated_at"},
            foreign_keys=[("account_id", "accounts", "id")],
            if_not_exists=True,
        )
        db.table("conversations").create_index(["account_id", "updated_at"], if_not_exists=True)
        db.table("conversation_messages").create(
            {
                "id": int,
                "conversation_id": int,
                "role": str,
                "content": str,
                "model": str,
                "tokens": int,
                "created_at": float,
            },
            pk="id",
            not_null={"conversation_id", "role", "content", "model", "tokens", "created_at"},
            foreign_keys=[("conversation_id", "conversations", "id")],
            if_not_exists=True,
        )
        db.table("conversation_messages").create_index(["conversation_id", "id"], if_not_exists=True)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.conn.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits."""
        return await self._run(lambda db: int(db.execute("PRAGMA data_version").fetchone()[0]))

    # Accounts and balances.

    async def insert_account(self, account: AccountRecord, credits: int) -> None:
        await self._run(lambda db: db.table("accounts").insert({**dataclasses.asdict(account), "credits": credits}))

    async def list_accounts(self) -> list[AccountRecord]:
        def _list(db: sqlite_utils.Database) -> list[AccountRecord]:
            rows = db.execute("SELECT id, name, plan, created_at FROM accounts ORDER BY created_at, id").fetchall()
            return [AccountRecord(*row) for row in rows]

        return await self._run(_list)

    async def balances(self) -> dict[str, int]:
        return await self._run(lambda db: dict(db.execute("SELECT id, credits FROM accounts").fetchall()))

    async def balance(self, account_id: str) -> int | None:
        def _read(db: sqlite_utils.Database) -> int | None:
            row = db.execute("SELECT credits FROM accounts WHERE id = ?", [account_id]).fetchone()
            return None if row is None else int(row[0])

        return await self._run(_read)

    async def add_credits(self, account_id: str, amount: int) -> CreditChange | None:
        """Adds (or with a negative amount, removes) credits; the balance before and after, None if no such account."""

        def _add(db: sqlite_utils.Database) -> CreditChange | None:
            with db.conn:
                db.conn.execute("BEGIN IMMEDIATE")  # no other process writes between the read and the update
                before = db.conn.execute("SELECT credits FROM accounts WHERE id = ?", [account_id]).fetchone()
                row = db.conn.execute(
                    "UPDATE accounts SET credits = max(0, credits + ?) WHERE id = ? RETURNING credits",
                    [amount, account_id],
                ).fetchone()
            return None if row is None else CreditChange(int(before[0]), int(row[0]))

        return await self._run(_add)

    # Keys.

    async def insert_key(self, key: KeyRecord) -> None:
        await self._run(lambda db: db.table("api_keys").insert(_key_row(key)))

    async def replace_key(self, key: KeyRecord) -> None:
        await self._run(lambda db: db.table("api_keys").update(key.id, _key_row(key)))

    async def list_keys(self) -> list[KeyRecord]:
        return await self._run(
            lambda db: [_key_from_row(row) for row in db.table("api_keys").rows_where(order_by="created_at, id")]
        )

    async def delete_key(self, key_id: str) -> bool:
        return await self._run(lambda db: db.execute("DELETE FROM api_keys WHERE id = ?", [key_id]).rowcount > 0)

    # Usage.

    async def record_calls(
        self, rows: Sequence[UsageRecord], last_used: Mapping[str, int], charges: Mapping[str, int]
    ) -> None:
        """Writes usage rows, the credits they cost and last-used times in one transaction."""

        def _write(db: sqlite_utils.Database) -> None:
            with db.conn:
                db.conn.execute("BEGIN IMMEDIATE")
                db.conn.executemany(_INSERT_USAGE, [_usage_values(row) for row in rows])
                db.conn.executemany(
                    "UPDATE accounts SET credits = max(0, credits - ?) WHERE id = ?",
                    [(amount, account_id) for account_id, amount in charges.items() if amount],
                )
                db.conn.executemany(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                    [(at, key_id, at) for key_id, at in last_used.items()],
                )

        await self._run(_write)

    async def tokens_since(self, since: float) -> dict[str, int]:
        """Tokens per key since a moment (the start of the UTC day, for budgets)."""
        return await self._run(
            lambda db: dict(
                db.execute(
                    "SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM usage"
                    " WHERE created_at >= ? AND key_id != '' GROUP BY key_id",
                    [since],
                ).fetchall()
            )
        )

    async def daily_usage(self, account_id: str, start: float, end: float) -> list[DailyUsage]:
        """Per UTC day in [start, end), for one account."""

        def _query(db: sqlite_utils.Database) -> list[DailyUsage]:
            rows = db.execute(
                "SELECT date(created_at, 'unixepoch'), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost)"
                " FROM usage WHERE account_id = ? AND created_at >= ? AND created_at < ? GROUP BY 1 ORDER BY 1",
                [account_id, start, end],
            ).fetchall()
            return [DailyUsage(*row) for row in rows]

        return await self._run(_query)

    # chat/send conversations. Every read names the account: another account's conversation is none.

    async def conversation(self, account_id: str, conversation_id: int) -> ConversationRecord | None:
        def _get(db: sqlite_utils.Database) -> ConversationRecord | None:
            row = db.execute(_CONVERSATION + " WHERE c.id = ? AND c.account_id = ?", [conversation_id, account_id])
            found = row.fetchone()
            return None if found is None else ConversationRecord(*found)

        return await self._run(_get)

    async def conversations(self, account_id: str, offset: int, limit: int) -> tuple[list[ConversationRecord], int]:
        """One page of an account's conversations, the latest first, and how many it has in all."""

        def _list(db: sqlite_utils.Database) -> tuple[list[ConversationRecord], int]:
            rows = db.execute(
                _CONVERSATION + " WHERE c.account_id = ? ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?",
                [account_id, limit, offset],
            ).fetchall()
            total = db.execute("SELECT COUNT(*) FROM conversations WHERE account_id = ?", [account_id]).fetchone()
            return [ConversationRecord(*row) for row in rows], int(total[0])

        return await self._run(_list)

    async def conversation_messages(self, conversation_id: int) -> list[ChatMessageRecord]:
        """A conversation's messages, oldest first."""
        return await self._run(
            lambda db: [
                ChatMessageRecord(*row)
                for row in db.execute(
                    "SELECT id, conversation_id, role, content, model, tokens, created_at FROM conversation_messages"
                    " WHERE conversation_id = ? ORDER BY id",
                    [conversation_id],
                ).fetchall()
            ]
        )

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
        """Adds a question and its answer to a conversation (a new one when `conversation_id` is None)
        in one transaction; (conversation id, answer's message id), or None when the conversation is
        not the account's (any more). ConversationChanged when a message follows `after` by now."""

        def _save(db: sqlite_utils.Database) -> tuple[int, int] | None:
            with db.conn:
                db.conn.execute("BEGIN IMMEDIATE")
                if conversation_id is None:
                    cursor = db.conn.execute(
                        "INSERT INTO conversations (account_id, title, model, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [account_id, _title(question), model, at, at],
                    )
                    target = int(cursor.lastrowid or 0)
                else:
                    cursor = db.conn.execute(
                        "UPDATE conversations SET model = ?, updated_at = ? WHERE id = ? AND account_id = ?",
                        [model, at, conversation_id, account_id],
                    )
                    if cursor.rowcount == 0:
                        return None
                    target = conversation_id
                    # BEGIN IMMEDIATE holds the one write lock: no other process stores in between.
                    if after is not None and db.conn.execute(_LAST_ID, [target]).fetchone()[0] != after:
                        raise ConversationChanged()
                insert = (
                    "INSERT INTO conversation_messages (conversation_id, role, content, model, tokens, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                )
                db.conn.execute(insert, [target, "user", question, model, 0, at])
                reply = db.conn.execute(insert, [target, "assistant", answer, model, tokens, at])
                return target, int(reply.lastrowid or 0)

        return await self._run(_save)

    async def forget_exchange(self, conversation_id: int, answer_id: int) -> None:
        def _forget(db: sqlite_utils.Database) -> None:
            with db.conn:
                db.conn.execute("BEGIN IMMEDIATE")
                db.conn.execute(_FORGET_EXCHANGE, {"conversation": conversation_id, "answer": answer_id})
                left = db.conn.execute(_LAST_MESSAGE, [conversation_id]).fetchone()
                if left is None:
                    db.conn.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
                else:
                    db.conn.execute(
                        "UPDATE conversations SET model = ?, updated_at = ? WHERE id = ?", [*left, conversation_id]
                    )

        await self._run(_forget)


# The answer and the question stored with it: the latest user message before the answer (exchanges on
# one conversation are stored one at a time, so nothing else lies between them).
_FORGET_EXCHANGE = (
    "DELETE FROM conversation_messages WHERE conversation_id = :conversation AND id IN (:answer,"
    " (SELECT MAX(id) FROM conversation_messages"
    "  WHERE conversation_id = :conversation AND id < :answer AND role = 'user'))"
)
_LAST_ID = "SELECT COALESCE(MAX(id), 0) FROM conversation_messages WHERE conversation_id = ?"
_LAST_MESSAGE = "SELECT model, created_at FROM conversation_messages WHERE conversation_id = ? ORDER BY id DESC LIMIT 1"

_CONVERSATION = (
    "SELECT c.id, c.account_id, c.title, c.model, c.created_at, c.updated_at,"
    " (SELECT COUNT(*) FROM conversation_messages m WHERE m.conversation_id = c.id) FROM conversations c"
)
# A conversation's title: the start of its first message, on one line.
_TITLE_CHARS = 80


def _title(question: str) -> str:
    line = " ".join(question.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "\u2026"
