"""Async access to any store, for the memories' ``aadd_message`` / ``amessages``.

A store with a native async client has ``a``-prefixed twins of its methods (``RedisStore.
aappend_many`` on ``redis.asyncio``): :func:`acall` awaits those; for the others (SQLite, in
memory, or a method a store has no async twin of) it runs the blocking method on a worker
thread, so the event loop never waits on disk or network.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["acall", "is_native"]


def is_native(store: Any, method: str) -> bool:
    """Whether ``store`` answers ``method`` on its own async client."""
    return callable(getattr(store, "a" + method, None))


async def acall(store: Any, method: str, *args: Any) -> Any:
    """``store.<method>(*args)`` without blocking the event loop."""
    if is_native(store, method):
        return await getattr(store, "a" + method)(*args)
    return await asyncio.to_thread(getattr(store, method), *args)
