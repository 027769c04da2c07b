"""Persistent storage: SQLite through sqlite-utils (the embedded default) or PostgreSQL through asyncpg."""

from modelway.config import StoreConfig
from modelway.store.base import STORE_RETRY_AFTER, ConversationChanged, Store, StoreUnavailable
from modelway.store.records import AccountRecord, DailyUsage, KeyRecord, UsageRecord
from modelway.store.sqlite import SqliteStore

__all__ = [
    "STORE_RETRY_AFTER",
    "AccountRecord",
    "ConversationChanged",
    "DailyUsage",
    "KeyRecord",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "UsageRecord",
    "open_store",
]


def open_store(config: StoreConfig) -> Store:
    """The store the configuration names (not yet opened): PostgreSQL when `url` is set, else the SQLite file."""
    if config.url:
        # Imported here: asyncpg is loaded only by deployments that use it.
        from modelway.store.postgres import PostgresStore

        return PostgresStore(config.url)
    return SqliteStore(config.path, synchronous=config.sqlite_synchronous)
