"""Persistent storage; SQLite through sqlite-utils is the embedded default."""

from modelway.store.records import AccountRecord, DailyUsage, KeyRecord, UsageRecord
from modelway.store.sqlite import SqliteStore

__all__ = ["AccountRecord", "DailyUsage", "KeyRecord", "SqliteStore", "UsageRecord"]
