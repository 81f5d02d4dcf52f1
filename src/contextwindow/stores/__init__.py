"""Where conversations persist: in memory, in SQLite, and (optional extras) Redis or PostgreSQL."""

from typing import Any
from urllib.parse import parse_qsl

from ..errors import StoreError
from .base import Store
from .inmemory import InMemoryStore
from .sqlite import SQLiteStore

__all__ = ["InMemoryStore", "PostgresStore", "RedisStore", "SQLiteStore", "Store", "open"]

# Kept importable from here (earlier releases listed it); not the API.
from .base import check_session  # noqa: F401


def open(url: str, *, namespace: str | None = None) -> Any:
    """A store from a URL: ``redis://...`` / ``rediss://...``, ``postgresql://...``,
    ``memory`` (one process only), or a SQLite file (``sqlite:///path`` or a plain path;
    ``sqlite:///path?synchronous=normal`` for :class:`SQLiteStore`'s ``synchronous``).
    ``namespace`` keeps apps apart in one server: a Redis key prefix, a PostgreSQL schema."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from .redis_store import DEFAULT_PREFIX, RedisStore

        return RedisStore(url, prefix=f"{namespace}:" if namespace else DEFAULT_PREFIX)
    if scheme in ("postgresql", "postgres"):
        from .postgres_store import PostgresStore

        return PostgresStore(url, schema=namespace)
    if url == "memory":
        return InMemoryStore()
    if scheme not in ("", "sqlite"):
        raise StoreError(f"unknown store URL scheme {scheme!r}: use redis://, postgresql://, "
                         "sqlite:///PATH, a file path, or memory")
    return _sqlite(url[len("sqlite://"):]) if scheme else SQLiteStore(url)


def _sqlite(rest: str) -> SQLiteStore:
    """A SQLite store from what follows ``sqlite://``: the path, and options after a ``?``
    (only in the URL form: a plain path is taken whole, ``?`` and all)."""
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"synchronous"})
    if unknown:
        raise StoreError(f"unknown SQLite URL option {unknown[0]!r}: the one option is "
                         "synchronous=full|normal")
    return SQLiteStore(path, synchronous=options.get("synchronous", "full"))


def __getattr__(name: str) -> Any:
    """``RedisStore`` and ``PostgresStore`` load on first use: redis/psycopg are optional."""
    if name == "RedisStore":
        from .redis_store import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres_store import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
