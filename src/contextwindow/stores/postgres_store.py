"""PostgreSQL persistence (extra ``contextwindow[postgres]``): many app servers, one database.

Two tables (in ``schema`` if given, else the connection's ``search_path``)::

    contextwindow_messages  (seq bigserial PRIMARY KEY, session text, id text, data text,
                             UNIQUE (session, id))
    contextwindow_summaries (session text PRIMARY KEY, seq bigserial, data text)

Every ``append`` is one transaction (an ``INSERT`` in autocommit mode) under the server's
``synchronous_commit`` (``on`` by default: the commit is flushed to the WAL before ``append``
returns). ``seq`` orders a session; each writer's messages keep their order because a writer's
next insert starts after its previous one committed.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import StoreError
from ..messages import Message, Summary
from . import base

MESSAGES_TABLE = "contextwindow_messages"
SUMMARIES_TABLE = "contextwindow_summaries"
_SCHEMA_LOCK = 0x636F6E74  # pg_advisory_xact_lock key: creating the tables is serialised


def _check_id(message: Message) -> None:
    """PostgreSQL text holds valid UTF-8 without NUL; the message id is a text column."""
    if "\x00" in message.id:
        raise StoreError(f"message id {message.id!r} cannot be stored in PostgreSQL: "
                         "it contains a NUL character")
    try:
        message.id.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"message id {message.id!r} cannot be stored in PostgreSQL: "
                         "it is not valid Unicode text (lone surrogate)") from None


class PostgresStore:
    """All sessions in two PostgreSQL tables.

    ``dsn`` is a libpq connection string or URL (``postgresql://user:pw@host:5432/db``). The
    tables are created if missing. One connection per store, shared by threads under a lock;
    open one store per process (a connection does not survive ``fork``). When the connection
    breaks (server restart, network), a call reconnects and tries once more; an ``append``
    whose commit may have happened first checks whether its message is already there, so it is
    stored once.
    """

    def __init__(self, dsn: str = "", *, schema: str | None = None,
                 connect_timeout: float = 10.0) -> None:
        psycopg = base.import_driver("psycopg.sql", store="PostgresStore", needs="psycopg 3",
                                extra="postgres")
        self._psycopg = psycopg
        sql = psycopg.sql
        self.dsn = dsn
        self.schema = schema
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._closed = False
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise StoreError(f"bad PostgreSQL connection string: {exc}") from exc
        self.where = "postgresql://{}:{}/{}".format(
            info.get("host", "localhost"), info.get("port", 5432), info.get("dbname", ""))

        def table(name: str) -> Any:
            return sql.Identifier(schema, name) if schema else sql.Identifier(name)

        messages, summaries = table(MESSAGES_TABLE), table(SUMMARIES_TABLE)
        self._sql = {
            "append": sql.SQL("INSERT INTO {} (session, id, data) VALUES (%s, %s, %s)")
            .format(messages),
            "load": sql.SQL("SELECT data FROM {} WHERE session = %s ORDER BY seq OFFSET %s")
            .format(messages),
            "load_tail": sql.SQL("SELECT data FROM (SELECT seq, data FROM {} WHERE session = %s "
                                 "ORDER BY seq DESC LIMIT %s) AS t ORDER BY seq").format(messages),
            "load_one": sql.SQL("SELECT data FROM {} WHERE session = %s AND id = %s")
            .format(messages),
            # One statement, so one snapshot: sessions with messages by their first append,
            # then those with only a summary by their first summary (as SQLiteStore does).
            "sessions": sql.SQL(
                "SELECT session FROM (SELECT session, 0 AS k, MIN(seq) AS o FROM {} "
                "GROUP BY session UNION ALL SELECT session, 1, seq FROM {}) AS s "
                "ORDER BY k, o").format(messages, summaries),
            "delete_messages": sql.SQL("DELETE FROM {} WHERE session = %s").format(messages),
            "delete_summary": sql.SQL("DELETE FROM {} WHERE session = %s").format(summaries),
            "save_summary": sql.SQL(
                "INSERT INTO {} (session, data) VALUES (%s, %s) "
                "ON CONFLICT (session) DO UPDATE SET data = excluded.data").format(summaries),
            "load_summary": sql.SQL("SELECT data FROM {} WHERE session = %s").format(summaries),
        }
        index = sql.Identifier(f"{MESSAGES_TABLE}_by_session")
        self._ddl = [
            *([sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))]
              if schema else []),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, "
                    "session text NOT NULL, id text NOT NULL, data text NOT NULL, "
                    "UNIQUE (session, id))").format(messages),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (session, seq)").format(index, messages),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (session text PRIMARY KEY, "
                    "seq bigserial NOT NULL, data text NOT NULL)").format(summaries),
        ]
        self._conn: Any = None
        with self._lock:
            self._connect()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> None:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.dsn, autocommit=True,
                                   connect_timeout=max(1, round(self._connect_timeout)))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL store {self.where}: {exc}") from exc
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in self._ddl:
                    conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot create the tables in {self.where}: {exc}") from exc
        self._conn = conn

    def _run(self, work: Any, *, retry: bool = True, duplicate: str | None = None) -> Any:
        """``work(conn)`` under the lock. If the connection turns out broken (server restart,
        idle connection killed), reconnect and, when ``retry``, run ``work`` once more."""
        psycopg = self._psycopg
        with self._lock:
            if self._closed:
                raise StoreError(f"the PostgreSQL store {self.where} is closed")
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._connect()
                try:
                    return work(self._conn)
                except psycopg.errors.UniqueViolation as exc:
                    raise StoreError(duplicate or f"rejected by {self.where}: {exc}") from exc
                except psycopg.Error as exc:
                    if not self._conn.broken:
                        raise StoreError(f"PostgreSQL store {self.where} failed: {exc}") from exc
                    self._conn.close()
                    if not retry or attempt == 2:
                        raise StoreError(f"PostgreSQL store {self.where} lost its connection: "
                                         f"{exc}") from exc
            raise AssertionError("unreachable")

    # -- the Store protocol -----------------------------------------------------------------
    def append(self, session: str, message: Message) -> None:
        self.append_many(session, [message])

    def append_many(self, session: str, messages: list[Message]) -> None:
        base.check_session(session)
        for message in messages:
            _check_id(message)
        rows = [(session, message.id, base.encode_message(message)) for message in messages]
        if not rows:
            return
        state = {"tries": 0}

        def insert(conn: Any) -> None:
            state["tries"] += 1
            if state["tries"] > 1:
                # The first try broke the connection: its commit may or may not have happened.
                # If its first message is there, it did; an id with other data is a duplicate.
                row = conn.execute(self._sql["load_one"], rows[0][:2]).fetchone()
                if row is not None and row[0] == rows[0][2]:
                    return
            if len(rows) == 1:  # autocommit: the INSERT is its own transaction
                conn.execute(self._sql["append"], rows[0])
                return
            with conn.transaction():
                conn.cursor().executemany(self._sql["append"], rows)

        ids = ", ".join(repr(row[1]) for row in rows)
        self._run(insert, duplicate=f"message id {ids} is already stored in session "
                                    f"{session!r} of {self.where}")

    def load(self, session: str, start: int = 0) -> list[Message]:
        base.check_session(session)
        query, bound = ((self._sql["load"], start) if base.check_start(start) >= 0
                        else (self._sql["load_tail"], -start))
        rows = self._run(lambda conn: conn.execute(query, (session, bound)).fetchall())
        return [base.decode_message(data) for (data,) in rows]

    def sessions(self) -> list[str]:
        rows = self._run(lambda conn: conn.execute(self._sql["sessions"]).fetchall())
        return list(dict.fromkeys(session for (session,) in rows))

    def delete(self, session: str) -> None:
        base.check_session(session)

        def delete(conn: Any) -> None:
            with conn.transaction():  # both tables or neither
                conn.execute(self._sql["delete_messages"], (session,))
                conn.execute(self._sql["delete_summary"], (session,))

        self._run(delete)

    def save_summary(self, session: str, summary: Summary) -> None:
        base.check_session(session)
        data = base.encode_summary(summary)
        self._run(lambda conn: conn.execute(self._sql["save_summary"], (session, data)))

    def load_summary(self, session: str) -> Summary | None:
        base.check_session(session)
        rows = self._run(lambda conn: conn.execute(self._sql["load_summary"],
                                                   (session,)).fetchall())
        return base.decode_summary(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
