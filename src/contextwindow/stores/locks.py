"""Per-session locks that hold across processes, so several servers can share one store.

A store's ``append`` is atomic per message, but a chat turn is read-then-write: load the
history, answer, append the new messages. Two servers doing that to one session at once would
each answer without the other's turn. So each store provides its own kind of mutual exclusion,
keyed by session, as ``store.locks(ttl=...)`` (a :class:`SessionLocks`):

- Redis (:class:`~.redis_store.RedisLocks`): ``SET key token NX PX ttl`` on the store's Redis;
  the lock is a lease, renewed by its holder and released only with its token (a holder that
  died frees it when the lease ends);
- PostgreSQL (:class:`~.postgres_store.PostgresLocks`): ``pg_try_advisory_lock`` on a
  connection of its own; a holder that dies frees it when PostgreSQL sees the connection close;
- SQLite (:class:`~.sqlite.FileLocks`): ``fcntl`` byte-range locks in a file beside the
  database; the kernel frees them when the holder dies;
- in memory (:class:`LocalLocks`): nothing to share (the store lives in one process).

All are non-blocking: ``try_acquire`` returns a token or None, and the caller decides how to
wait. They exclude *processes*; within one process the caller serialises the holders of one
:func:`lock_key` (two locks of one process on the same key would not exclude each other).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from ..errors import StoreError

__all__ = ["LOCK_KEY_BITS", "LocalLocks", "SessionLocks", "lock_key", "session_locks"]

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


def session_locks(store: Any, *, ttl: float = 10.0) -> SessionLocks:
    """The locks that serialise one session's turns across every process sharing ``store``
    (its own ``locks``; ``ttl``: how long a Redis lease outlives a holder that stopped)."""
    locks = getattr(store, "locks", None)
    if locks is None:
        raise StoreError(f"no session locks for {type(store).__name__}; use SQLite, Redis or "
                         "PostgreSQL, or give the store a locks(ttl=...) method")
    return locks(ttl=ttl)
