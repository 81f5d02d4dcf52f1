"""SQLite persistence: the default durable store (one file, many sessions, WAL, fsync on commit)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..errors import StoreError
from ..messages import Message, Summary
from . import base

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    id      TEXT NOT NULL,
    data    TEXT NOT NULL,
    UNIQUE (session, id)
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session, seq);
CREATE TABLE IF NOT EXISTS summaries (
    session TEXT PRIMARY KEY,
    data    TEXT NOT NULL
);
"""


class SQLiteStore:
    """All sessions in one SQLite file.

    Every ``append`` is its own transaction in WAL mode with ``synchronous=FULL``, so a message
    is on disk when ``append`` returns and survives a crash of the process or the machine.
    Several processes may write the same file; SQLite serialises them (``timeout`` seconds).
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _run(self, sql: str, params: tuple | list[tuple] = (), *,
             many: bool = False) -> list[tuple]:
        """One statement; with ``many``, once per row of ``params`` in one transaction."""
        with self._lock:
            try:
                if not many:
                    return self._conn.execute(sql, params).fetchall()
                with self._conn:  # all rows or none
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(sql, params)
                return []
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"rejected by {self.path}: {exc}") from exc
            except UnicodeEncodeError as exc:  # a message id with a lone surrogate
                raise StoreError(f"rejected by {self.path}: message ids must be valid Unicode "
                                 f"text ({exc.reason})") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path} failed: {exc}") from exc

    def append(self, session: str, message: Message) -> None:
        self.append_many(session, [message])

    def append_many(self, session: str, messages: list[Message]) -> None:
        base.check_session(session)
        rows = [(session, message.id, base.encode_message(message)) for message in messages]
        self._run("INSERT INTO messages (session, id, data) VALUES (?, ?, ?)", rows, many=True)

    def load(self, session: str, start: int = 0) -> list[Message]:
        base.check_session(session)
        if base.check_start(start) < 0:  # the last -start messages: read from the end of the index
            rows = self._run("SELECT data FROM (SELECT seq, data FROM messages WHERE session = ? "
                             "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (session, -start))
        else:
            rows = self._run("SELECT data FROM messages WHERE session = ? ORDER BY seq "
                             "LIMIT -1 OFFSET ?", (session, start))
        return [base.decode_message(data) for (data,) in rows]

    def sessions(self) -> list[str]:
        with_messages = self._run("SELECT session FROM messages GROUP BY session ORDER BY MIN(seq)")
        with_summaries = self._run("SELECT session FROM summaries ORDER BY rowid")
        return list(dict.fromkeys(session for (session,) in [*with_messages, *with_summaries]))

    def delete(self, session: str) -> None:
        base.check_session(session)
        with self._lock:
            try:
                with self._conn:  # one transaction: both tables or neither
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.execute("DELETE FROM messages WHERE session = ?", (session,))
                    self._conn.execute("DELETE FROM summaries WHERE session = ?", (session,))
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path} failed: {exc}") from exc

    def save_summary(self, session: str, summary: Summary) -> None:
        base.check_session(session)
        self._run("INSERT INTO summaries (session, data) VALUES (?, ?) "
                  "ON CONFLICT (session) DO UPDATE SET data = excluded.data",
                  (session, base.encode_summary(summary)))

    def load_summary(self, session: str) -> Summary | None:
        base.check_session(session)
        rows = self._run("SELECT data FROM summaries WHERE session = ?", (session,))
        return base.decode_summary(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
