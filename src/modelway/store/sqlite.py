"""SQLite store on one dedicated thread, so no query ever runs on the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from modelway.store.records import KeyRecord, UsageRecord

__all__ = ["SqliteStore"]

T = TypeVar("T")

_KEY_COLUMNS = {field.name for field in dataclasses.fields(KeyRecord)}
_USAGE_COLUMNS = [field.name for field in dataclasses.fields(UsageRecord)]
# sqlite-utils' insert_all commits on its own; a batch must commit once, with
# the last-used updates, so it is plain SQL inside one explicit transaction.
_INSERT_USAGE = f"INSERT INTO usage ({', '.join(_USAGE_COLUMNS)}) VALUES ({', '.join('?' for _ in _USAGE_COLUMNS)})"


def _key_from_row(row: Mapping[str, Any]) -> KeyRecord:
    values = {name: row[name] for name in _KEY_COLUMNS}
    values["is_enabled"] = bool(values["is_enabled"])
    return KeyRecord(**values)


class SqliteStore:
    """All access goes through one worker thread: sqlite3 connections are not
    thread-safe and SQLite has one writer anyway. Callers await the result."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelway-store")
        self._db: sqlite_utils.Database | None = None

    async def _run(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

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
            self._db = db
            self._migrate(db)

        await asyncio.get_running_loop().run_in_executor(self._executor, _open)

    @staticmethod
    def _migrate(db: sqlite_utils.Database) -> None:
        db.table("api_keys").create(
            {
                "id": str,
                "name": str,
                "secret_hash": str,
                "hint": str,
                "created_at": int,
                "expires_at": int,
                "is_enabled": int,
                "last_used_at": int,
            },
            pk="id",
            not_null={"name", "secret_hash", "created_at", "is_enabled"},
            if_not_exists=True,
        )
        db.table("api_keys").create_index(["secret_hash"], unique=True, if_not_exists=True)
        db.table("usage").create(
            {
                "id": int,
                "request_id": str,
                "key_id": str,
                "surface": str,
                "model": str,
                "provider": str,
                "prompt_tokens": int,
                "completion_tokens": int,
                "latency_ms": int,
                "status": int,
                "error_code": str,
                "created_at": float,
            },
            pk="id",
            if_not_exists=True,
        )
        db.table("usage").create_index(["key_id", "created_at"], if_not_exists=True)

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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

    async def insert_key(self, key: KeyRecord) -> None:
        await self._run(lambda db: db.table("api_keys").insert(dataclasses.asdict(key)))

    async def list_keys(self) -> list[KeyRecord]:
        return await self._run(
            lambda db: [_key_from_row(row) for row in db.table("api_keys").rows_where(order_by="created_at")]
        )

    async def find_key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        def _find(db: sqlite_utils.Database) -> KeyRecord | None:
            rows = list(db.table("api_keys").rows_where("secret_hash = ?", [secret_hash], limit=1))
            return _key_from_row(rows[0]) if rows else None

        return await self._run(_find)

    async def delete_key(self, key_id: str) -> bool:
        def _delete(db: sqlite_utils.Database) -> bool:
            return db.execute("DELETE FROM api_keys WHERE id = ?", [key_id]).rowcount > 0

        return await self._run(_delete)

    async def record_calls(self, rows: Sequence[UsageRecord], last_used: Mapping[str, int]) -> None:
        """Writes a batch of usage rows and last-used times in one transaction."""

        def _write(db: sqlite_utils.Database) -> None:
            with db.conn:
                db.conn.execute("BEGIN")
                db.conn.executemany(_INSERT_USAGE, [dataclasses.astuple(row) for row in rows])
                db.conn.executemany(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                    [(at, key_id, at) for key_id, at in last_used.items()],
                )

        await self._run(_write)

    async def count_usage(self) -> int:
        return await self._run(lambda db: db.table("usage").count)
