"""Where conversations persist: in memory, in SQLite, and (optional extras) Redis or PostgreSQL."""

from .base import Store, check_session
from .inmemory import InMemoryStore
from .sqlite import SQLiteStore

__all__ = ["InMemoryStore", "SQLiteStore", "Store", "check_session"]
