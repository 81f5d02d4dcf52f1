"""PostgresStore's async twins, on psycopg's ``AsyncConnection`` (see :mod:`.aio`): the same
append statement and checks as the store's own (``_append_params``), awaited on the event loop;
the statement also counts the messages' lexemes, so async appends keep the document
frequencies exact too. A mixin of :class:`~.postgres_store.PostgresStore`, kept apart so each
module stays small."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import StoreError
from ..messages import Message


class AsyncAppends:
    """``aappend`` / ``aappend_many`` for the store this is mixed into."""

    where: str
    dsn: str
    _psycopg: Any
    _sql: dict[str, Any]
    _closed: bool
    _connect_timeout: float
    _aio: tuple[Any, Any] | None = None  # (event loop, its AsyncConnection)
    _retries: int

    def _append_params(self, session: str, messages: list[Message]) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _duplicate(self, session: str, ids: list[str]) -> str:
        raise NotImplementedError

    def _lost(self, session: str) -> StoreError:
        raise NotImplementedError

    def _lost_race(self, exc: Any) -> bool:
        raise NotImplementedError

    async def aappend(self, session: str, message: Message) -> None:
        await self.aappend_many(session, [message])

    async def aappend_many(self, session: str, messages: list[Message]) -> None:
        """:meth:`append_many` on the event loop; a lost connection is reported, not retried
        (the next call reconnects)."""
        params = self._append_params(session, messages)
        if params is None:
            return
        psycopg = self._psycopg
        conn = await self._async_connection()
        try:
            for _ in range(self._retries):
                try:
                    await conn.execute(self._sql["append"], params)
                    return
                except psycopg.errors.UniqueViolation as exc:
                    if not self._lost_race(exc):
                        raise StoreError(self._duplicate(session, params[2])) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {self.where} failed: {exc}") from exc
        raise self._lost(session)

    async def _async_connection(self) -> Any:
        """This event loop's connection (an async connection belongs to the loop that opened
        it); the tables exist already (the store's first connection made them)."""
        if self._closed:
            raise StoreError(f"the PostgreSQL store {self.where} is closed")
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio[0] is not loop or self._aio[1].closed:
            psycopg = self._psycopg
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout)))
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to PostgreSQL store {self.where}: "
                                 f"{exc}") from exc
            self._aio = (loop, conn)
        return self._aio[1]
