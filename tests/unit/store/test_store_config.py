"""[store]: SQLite (path) or PostgreSQL (url), the environment's choice, and a password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelway.config import ConfigError, load_config, redact_url
from modelway.store import SqliteStore, open_store
from modelway.store.postgres import PostgresStore

SHIPPED = Path(__file__).resolve().parents[3] / "modelway.toml"
URL = "postgresql://modelway:hunter2-secret@db.internal:5432/modelway"


def test_the_shipped_file_is_sqlite_and_the_environment_switches_to_postgresql() -> None:
    assert isinstance(open_store(load_config(SHIPPED, {}).store), SqliteStore)
    store = load_config(SHIPPED, {"MODELWAY_STORE_URL": URL}).store
    assert store.url == URL and isinstance(open_store(store), PostgresStore)
    assert store.files_dir == Path(".data")
    # MODELWAY_DB picks SQLite back over a file's url.
    assert load_config(SHIPPED, {"MODELWAY_DB": "/tmp/x.db"}).store.url == ""


def test_url_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(f'[store]\nurl = "{URL}"\nmax_queued_rows = 50\ndata_dir = "/srv/mw"\n')
    store = load_config(path, {}).store
    assert (store.url, store.max_queued_rows, store.files_dir) == (URL, 50, Path("/srv/mw"))


@pytest.mark.parametrize(
    ("text", "environ", "words"),
    [
        (f'[store]\npath = "x.db"\nurl = "{URL}"\n', {}, "not both"),
        ("", {"MODELWAY_DB": "x.db", "MODELWAY_STORE_URL": URL}, "not both"),
        ('[store]\nurl = "mysql://modelway:hunter2-secret@h/db"\n', {}, "must be a postgresql:// URL"),
        ("", {"MODELWAY_STORE_URL": "postgres://modelway:hunter2-secret@/db"}, "names no host"),
        ("[store]\nmax_queued_rows = 0\n", {}, "max_queued_rows must be at least 1"),
        ('[store]\nsqlite_synchronous = "off"\n', {}, 'sqlite_synchronous must be "full" or "normal", got \'off\''),
        ("[store]\nsqlite_synchronous = 1\n", {}, "sqlite_synchronous must be a string, got 1"),
    ],
)
def test_a_bad_store_is_one_clear_error_without_the_password(
    tmp_path: Path, text: str, environ: dict[str, str], words: str
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as raised:
        load_config(path, environ)
    assert "hunter2" not in str(raised.value)


def test_the_password_is_masked_wherever_the_url_is_shown() -> None:
    assert redact_url(URL) == "postgresql://modelway:***@db.internal:5432/modelway"
    assert redact_url("postgresql://h/db?user=u&password=hunter2") == "postgresql://h/db?user=u&password=***"
    store = load_config(SHIPPED, {"MODELWAY_STORE_URL": URL}).store
    assert "hunter2" not in repr(store) and "hunter2" not in store.url_shown
    assert "hunter2" not in repr(PostgresStore(URL))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:S3#CRET@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app:a/b?c@db/x?sslmode=require", "postgresql://app:***@db/x?sslmode=require"),
        ("redis://:p#w@h:1/0?password=z", "redis://***@h:1/0?password=***"),
        ("redis://u@h/0?db=1&Password=x", "redis://u@h/0?db=1&Password=***"),
    ],
)
def test_a_password_holding_url_delimiters_is_masked_whole(url: str, shown: str) -> None:
    # Passwords as typed into a config file, unescaped: # ? / would end the authority for urlsplit.
    from modelway.config import SharedConfig

    assert redact_url(url) == shown
    if url.startswith("redis://"):
        assert SharedConfig(redis_url=url).shown_url == shown


@pytest.mark.parametrize(
    ("line", "pragma"),
    [("", 2), ('sqlite_synchronous = "full"', 2), ('sqlite_synchronous = "normal"', 1)],
)
async def test_the_sqlite_file_commits_as_synchronously_as_configured(tmp_path: Path, line: str, pragma: int) -> None:
    # FULL (2), the default: every commit reaches the disk before the call that wrote it is answered.
    # NORMAL (1): in WAL mode the file is synced at checkpoints only (safe from a crash of the process).
    path = tmp_path / "m.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "store.db"}"\n{line}\n')
    store = open_store(load_config(path, {}).store)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        assert await store._run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == pragma
        assert await store._run(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    finally:
        await store.close()


def test_sqlite_synchronous_is_checked_by_the_store_too_and_ignored_by_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='synchronous must be "full" or "normal", got \'off\''):
        SqliteStore(tmp_path / "store.db", synchronous="off")
    path = tmp_path / "m.toml"
    path.write_text(f'[store]\nurl = "{URL}"\nsqlite_synchronous = "normal"\n')
    assert isinstance(open_store(load_config(path, {}).store), PostgresStore)
