"""The in-memory directory stays right when its own writes race a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelway.config import ALL_PERMISSIONS, Config
from modelway.core.directory import Directory
from modelway.core.keys import IssuedKey, issue_key
from modelway.store import AccountRecord, KeyRecord, SqliteStore
from tests.unit.core.test_limits import FixedClock


class PausingStore(SqliteStore):
    """A real store whose key listing can be held at its end, to order a race."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.listed = asyncio.Event()
        self.release = asyncio.Event()
        self.pause = False

    async def list_keys(self) -> list[KeyRecord]:
        keys = await super().list_keys()
        if self.pause:
            self.listed.set()
            await self.release.wait()
        return keys


async def _loaded(store: SqliteStore, now: float = 0) -> tuple[Directory, IssuedKey]:
    """`store` opened with one account and one key, and a directory that has loaded them."""
    await store.open()
    await store.insert_account(AccountRecord("acct", "a", "free", 0), credits=0)
    issued = issue_key("acct", "k", prefix="t-", now=0, permissions=ALL_PERMISSIONS)
    await store.insert_key(issued.record)
    directory = Directory(store, Config(), FixedClock(now))
    await directory.load()
    return directory, issued


async def test_a_reload_read_before_a_delete_does_not_bring_the_key_back(tmp_path: Path) -> None:
    store = PausingStore(tmp_path / "dir.db")
    directory, issued = await _loaded(store)

    store.pause = True
    reload = asyncio.create_task(directory.load())
    await store.listed.wait()  # the reload holds a snapshot with the key in it
    await directory.delete_key(issued.record.id)
    store.release.set()
    await reload

    assert directory.key(issued.record.id) is None
    assert await store.list_keys() == []
    await store.close()


async def test_a_reload_read_before_a_last_use_is_written_does_not_forget_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "dir.db")
    directory, issued = await _loaded(store, now=1000)

    await directory.authenticate(issued.secret)
    taken = directory.take_last_used()  # handed to a usage write that has not committed yet
    await directory.load()  # a reload reads the store meanwhile: no last use there yet

    assert taken == {issued.record.id: 1000}
    key = directory.key(issued.record.id)
    assert key is not None and key.last_used_at == 1000
    await store.close()
