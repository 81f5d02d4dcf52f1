"""Per-session locks that hold across processes, so several servers can share one store.

A store's ``append`` is atomic per message, but a chat turn is read-then-write: load the
history, answer, append the new messages. Two servers doing that to one session at once would
each answer without the other's turn. :func:`session_locks` gives the store's own kind of
mutual exclusion, keyed by session:

- :class:`RedisLocks`: ``SET key token NX PX ttl`` on the store's Redis; the lock is a lease,
  renewed by its holder and released only with its token (a holder that died frees it when the
  lease ends);
- :class:`PostgresLocks`: ``pg_try_advisory_lock`` on a connection of its own; a holder that
  dies frees it when PostgreSQL sees the connection close;
- :class:`FileLocks`: ``fcntl`` byte-range locks in a file beside the SQLite database; the
  kernel frees them when the holder dies;
- :class:`LocalLocks`: nothing to share (the in-memory store lives in one process).

All are non-blocking: ``try_acquire`` returns a token or None, and the caller decides how to
wait. They exclude *processes*; within one process the caller serialises the holders of one
:func:`lock_key` (two locks of one process on the same key would not exclude each other).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError

LOCK_KEY_BITS = 62
"""Lock keys are 62-bit integers: they fit PostgreSQL's bigint and a file offset."""


def lock_key(session: str) -> int:
    """The integer a session's lock is keyed by (SHA-256, so ids cannot pick collisions)."""
    digest = hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - LOCK_KEY_BITS)


class SessionLocks(Protocol):
    """Non-blocking per-session locks shared by every process using one store."""

    lease: float | None  # seconds a lock lasts unless renewed; None: until released

    def try_acquire(self, session: str) -> str | None:
        """A token if the lock was free (now held), else None."""

    def renew(self, session: str, token: str) -> bool:
        """Keep holding (extends a lease); False if the lock was lost."""

    def held(self, session: str, token: str) -> bool:
        """Whether the lock is still ours (a read: nothing is extended)."""

    def release(self, session: str, token: str) -> None:
        """Give the lock up (a no-op if it was lost)."""

    def close(self) -> None:
        """Release connections and files."""


class LocalLocks:
    """For stores that live in one process: the caller's in-process lock is all there is."""

    lease = None

    def try_acquire(self, session: str) -> str | None:
        return "local"

    def renew(self, session: str, token: str) -> bool:
        return True

    held = renew

    def release(self, session: str, token: str) -> None:
        """Nothing held outside the process."""

    def close(self) -> None:
        """Nothing to release."""


# KEYS: the lock.  ARGV: token, ttl in ms.  Extend (1) or release (0 ttl) only one's own lock.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2])
else redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLocks:
    """Leases in Redis, ``<prefix>lock:<session>``: a holder that stops renewing (crashed,
    partitioned) loses the lock after ``ttl`` seconds."""

    def __init__(self, client: Any, prefix: str, *, ttl: float = 10.0) -> None:
        self._client = client
        self._prefix = prefix.encode("utf-8") + b"lock:"
        self._ttl_ms = max(1, round(ttl * 1000))
        self.lease: float | None = ttl
        self._renew = client.register_script(_RENEW)
        import redis

        self._errors = (redis.RedisError,)

    def _key(self, session: str) -> bytes:
        return self._prefix + session.encode("utf-8")

    def try_acquire(self, session: str) -> str | None:
        token = secrets.token_hex(16)
        try:
            taken = self._client.set(self._key(session), token, nx=True, px=self._ttl_ms)
        except self._errors as exc:
            raise StoreError(f"cannot take the session lock in Redis: {exc}") from exc
        return token if taken else None

    def renew(self, session: str, token: str) -> bool:
        try:
            return bool(self._renew(keys=[self._key(session)], args=[token, self._ttl_ms]))
        except self._errors as exc:
            raise StoreError(f"cannot renew the session lock in Redis: {exc}") from exc

    def held(self, session: str, token: str) -> bool:
        try:
            return self._client.get(self._key(session)) == token.encode()
        except self._errors as exc:
            raise StoreError(f"cannot read the session lock in Redis: {exc}") from exc

    def release(self, session: str, token: str) -> None:
        try:
            self._renew(keys=[self._key(session)], args=[token, 0])
        except self._errors as exc:
            raise StoreError(f"cannot release the session lock in Redis: {exc}") from exc

    def close(self) -> None:
        """The client belongs to the store."""


class PostgresLocks:
    """Session-level advisory locks on one connection of their own (locks of a connection do
    not exclude each other, hence the caller's in-process serialisation by :func:`lock_key`)."""

    lease = None

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        import psycopg

        self._psycopg = psycopg
        self._guard = threading.Lock()
        try:
            self._conn = psycopg.connect(dsn, autocommit=True,
                                         connect_timeout=max(1, round(connect_timeout)))
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the session-lock connection: {exc}") from exc

    def _query(self, sql: str, key: int) -> bool:
        with self._guard:
            try:
                return bool(self._conn.execute(sql, (key,)).fetchone()[0])
            except self._psycopg.Error as exc:
                raise StoreError(f"session lock in PostgreSQL failed: {exc}") from exc

    def try_acquire(self, session: str) -> str | None:
        key = lock_key(session)
        return str(key) if self._query("SELECT pg_try_advisory_lock(%s)", key) else None

    def renew(self, session: str, token: str) -> bool:
        """Held as long as the connection lives."""
        with self._guard:
            return not self._conn.closed and not self._conn.broken

    held = renew

    def release(self, session: str, token: str) -> None:
        self._query("SELECT pg_advisory_unlock(%s)", int(token))

    def close(self) -> None:
        with self._guard:
            self._conn.close()


class FileLocks:
    """``fcntl`` locks on one byte per session (at offset :func:`lock_key`) of a lock file."""

    lease = None

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the session-lock file {self.path}: {exc}") from exc

    def try_acquire(self, session: str) -> str | None:
        key = lock_key(session)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        except (BlockingIOError, PermissionError):
            return None
        return str(key)

    def renew(self, session: str, token: str) -> bool:
        return True

    held = renew

    def release(self, session: str, token: str) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, int(token))

    def close(self) -> None:
        os.close(self._fd)


def session_locks(store: Any, *, ttl: float = 10.0) -> SessionLocks:
    """The locks that serialise one session's turns across every process sharing ``store``."""
    from .inmemory import InMemoryStore
    from .sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return FileLocks(store.path.with_name(store.path.name + ".locks"))
    if isinstance(store, InMemoryStore):
        return LocalLocks()
    kind = type(store).__name__
    if kind == "RedisStore":
        return RedisLocks(store._client, store.prefix, ttl=ttl)
    if kind == "PostgresStore":
        return PostgresLocks(store.dsn)
    raise StoreError(f"no session locks for {kind}; use SQLite, Redis or PostgreSQL")
