"""Where conversations persist: in memory, in SQLite, and (optional extras) Redis or PostgreSQL."""

from typing import Any

from .base import Store, check_session
from .inmemory import InMemoryStore
from .sqlite import SQLiteStore

__all__ = ["InMemoryStore", "PostgresStore", "RedisStore", "SQLiteStore", "Store",
           "check_session"]


def __getattr__(name: str) -> Any:
    """``RedisStore`` and ``PostgresStore`` load on first use: redis/psycopg are optional."""
    if name == "RedisStore":
        from .redis_store import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres_store import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
