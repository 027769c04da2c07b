"""Persistent storage; SQLite through sqlite-utils is the embedded default."""

from modelway.store.records import KeyRecord, UsageRecord
from modelway.store.sqlite import SqliteStore

__all__ = ["KeyRecord", "SqliteStore", "UsageRecord"]
