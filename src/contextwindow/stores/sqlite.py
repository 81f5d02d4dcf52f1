"""SQLite persistence: the default durable store (one file, many sessions, WAL, fsync on commit)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError, StoreError
from ..messages import Message, Summary
from ..retrieval.text import Hit, index_terms, indexed_text, prune_terms, stem
from . import base
from .locks import lock_key

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS vectors (
    session  TEXT NOT NULL,
    model    TEXT NOT NULL,
    position INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (session, model, position)
) WITHOUT ROWID;
"""
# The recall index: one row per message, its rowid the message's seq, its text the message's
# stems (``index_terms``: our Snowball stemmer and stop words, as the in-process index; the
# ``ascii`` tokenizer leaves them as they are); ``tag`` is the session's tag (a word no text
# has), so a search can be an AND that FTS5 evaluates within the session.
_INDEX = "CREATE VIRTUAL TABLE messages_fts USING fts5(text, tag, tokenize = 'ascii')"
_INDEX_LAYOUT = "SELECT sql FROM sqlite_master WHERE name = 'messages_fts'"
_INSERT_INDEX = "INSERT INTO messages_fts (rowid, text, tag) VALUES (?, ?, ?)"
# Each indexed message's position in its session (a plain table: reading a column of a row
# of the FTS5 table by rowid costs ~25 us, of this one ~1 us).
_POSITIONS = ("CREATE TABLE messages_positions (seq INTEGER PRIMARY KEY, "
              "position INTEGER NOT NULL)")
_INSERT_POSITION = "INSERT INTO messages_positions (seq, position) VALUES (?, ?)"
# Each stem's document frequency in the index's text column, file-wide, and under the empty
# term (no stem is empty) the number of indexed messages: what FTS5's idf reads, looked up in
# microseconds (FTS5 itself can only count a term's documents by reading its postings).
_TERMS = ("CREATE TABLE messages_terms (term TEXT PRIMARY KEY, documents INTEGER NOT NULL) "
          "WITHOUT ROWID")
_COUNT_TERMS = ("INSERT INTO messages_terms (term, documents) VALUES (?, ?) ON CONFLICT (term) "
                "DO UPDATE SET documents = documents + excluded.documents")
# The best ``limit`` rows by BM25 of the text column alone (the tag's weight is 0), newest first
# among equals; only those are looked up (their position, and their session, which a tag
# shared by two sessions could not tell apart), so a search reads no row it does not return.
_SEARCH = """
SELECT p.position, -t.rank FROM (
    SELECT rowid, rank FROM messages_fts
    WHERE messages_fts MATCH ? AND rank MATCH 'bm25(1.0, 0.0, 0.0)'
    ORDER BY rank, rowid DESC LIMIT ?) AS t
JOIN messages AS m ON m.seq = t.rowid JOIN messages_positions AS p ON p.seq = t.rowid
WHERE m.session = ? ORDER BY t.rank, t.rowid DESC
"""
#: ``synchronous`` settings: FULL fsyncs the WAL at every commit; NORMAL only at checkpoints.
SYNCHRONOUS = ("full", "normal")


class SQLiteStore:
    """All sessions in one SQLite file.

    Every ``append`` is its own transaction in WAL mode. With ``synchronous="full"`` (the
    default) the WAL is fsynced at every commit, so a message is on disk when ``append``
    returns and survives a crash of the process or of the machine (an OS crash, a power
    cut). ``synchronous="normal"`` fsyncs only at checkpoints: an acknowledged message still
    survives the process being killed (even by SIGKILL: it is in the OS's page cache), but the
    last ones may be lost, never corrupted, if the machine goes down; an append then costs no
    fsync (~1 ms instead of ~10 ms on a disk that fsyncs in ~5 ms). Several processes may
    write the same file; SQLite serialises them (``timeout`` seconds).

    Recall: an FTS5 table ``messages_fts`` in the same file, one row per message with the
    message's ``seq`` as its rowid, its stems (:func:`~contextwindow.retrieval.text.index_terms`,
    so the same stemmer and stop words as the in-process index), its session's tag (a 128-bit
    hash of the id, written as digits), a table ``messages_positions`` of each message's
    position in its session, and a table ``messages_terms`` of each stem's document
    frequency. All are written in the transaction that writes the
    message, so no crash or failed append leaves one without the other; a file made before the
    index existed gets it, filled from its messages, in one transaction when it is first
    opened (and so does a file whose index has an earlier layout: it is built again). A search
    ranks by ``-bm25()`` of the text column (FTS5's BM25: Robertson idf floored at 1e-6,
    k1 = 1.2, b = 0.75) the terms :func:`~contextwindow.retrieval.text.prune_terms` keeps of
    the query (all of them unless their postings exceed its work bound), each term
    double-quoted: ``tag AND (term OR term ...)``, or without the tag when the session is
    the only one in the file. It costs in proportion to the kept terms' postings, plus, with
    the tag, the session's size (FTS5 reads the tag's postings: ~5 ms at 100,000 messages).
    Its statistics (document count, mean length, document frequencies) are the whole
    file's, every session together.
    Writers of a version without the index must not write to the file once it has one (their
    messages would be stored but never found).
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0,
                 synchronous: str = "full") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not "
                              f"{synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.executescript(_SCHEMA)
            if self._conn.execute(_INDEX_LAYOUT).fetchone() != (_INDEX,):
                self._transaction(self._create_index)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite's errors turned into StoreErrors."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"rejected by {self.path}: {exc}") from exc
            except UnicodeEncodeError as exc:  # a message id with a lone surrogate
                raise StoreError(f"rejected by {self.path}: message ids must be valid Unicode "
                                 f"text ({exc.reason})") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path} failed: {exc}") from exc

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        """One statement (its own transaction when it writes)."""
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _transaction(self, work: Callable[[sqlite3.Connection], T], *,
                     begin: str = "BEGIN IMMEDIATE") -> T:
        """``work(conn)`` in one write transaction (all of it or none), or with
        ``begin="BEGIN"`` one read transaction (every statement sees the same snapshot)."""
        with self._connection() as conn, conn:
            conn.execute(begin)
            return work(conn)

    @staticmethod
    def _create_index(conn: sqlite3.Connection) -> None:
        """Create the recall index and index every stored message (inside a transaction); an
        index of an earlier layout is dropped first."""
        found = conn.execute(_INDEX_LAYOUT).fetchone()
        if found == (_INDEX,):  # another process created it first
            return
        if found is not None:
            conn.execute("DROP TABLE messages_fts")
        for table in ("messages_terms", "messages_positions"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for create in (_INDEX, _TERMS, _POSITIONS):
            conn.execute(create)
        rows = [(seq, index_terms(text), session, position) for seq, text, session, position
                in base.backfill(conn.execute("SELECT seq, session, data FROM messages "
                                              "ORDER BY seq"))]
        conn.executemany(_INSERT_INDEX, ((seq, " ".join(terms), _tag(session))
                                         for seq, terms, session, _ in rows))
        conn.executemany(_INSERT_POSITION, ((seq, position) for seq, _, _, position in rows))
        conn.executemany(_COUNT_TERMS, _frequencies(terms for _, terms, _, _ in rows).items())

    @staticmethod
    def _next_position(conn: sqlite3.Connection, session: str) -> int:
        """The session's length: the position of its last message plus one (two index
        look-ups; counting rows would cost in proportion to the session)."""
        last = conn.execute("SELECT MAX(seq) FROM messages WHERE session = ?",
                            (session,)).fetchone()[0]
        if last is None:
            return 0
        row = conn.execute("SELECT position FROM messages_positions WHERE seq = ?",
                           (last,)).fetchone()
        if row is not None:
            return row[0] + 1
        # Its last message was written without an index row (by an older version): count.
        return conn.execute("SELECT COUNT(*) FROM messages WHERE session = ?",
                            (session,)).fetchone()[0]

    def append(self, session: str, message: Message) -> None:
        self.append_many(session, [message])

    def append_many(self, session: str, messages: list[Message]) -> None:
        base.check_session(session)
        stems = [index_terms(indexed_text(message)) for message in messages]
        rows = [(message.id, base.encode_message(message), " ".join(terms))
                for message, terms in zip(messages, stems, strict=True)]
        if not rows:
            return

        tag = _tag(session)
        counts = list(_frequencies(stems).items())

        def insert(conn: sqlite3.Connection) -> None:
            start = self._next_position(conn, session)
            for position, (message_id, data, text) in enumerate(rows, start=start):
                seq = conn.execute("INSERT INTO messages (session, id, data) VALUES (?, ?, ?)",
                                   (session, message_id, data)).lastrowid
                conn.execute(_INSERT_INDEX, (seq, text, tag))
                conn.execute(_INSERT_POSITION, (seq, position))
            conn.executemany(_COUNT_TERMS, counts)

        self._transaction(insert)

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

        def delete(conn: sqlite3.Connection) -> None:  # every table or none
            texts = conn.execute("SELECT text FROM messages_fts WHERE rowid IN "
                                 "(SELECT seq FROM messages WHERE session = ?)", (session,))
            counts = _frequencies(text.split() for (text,) in texts)
            conn.executemany("UPDATE messages_terms SET documents = documents - ? "
                             "WHERE term = ?", ((n, term) for term, n in counts.items()))
            conn.execute("DELETE FROM messages_terms WHERE documents <= 0")
            for index in ("messages_fts WHERE rowid", "messages_positions WHERE seq"):
                conn.execute(f"DELETE FROM {index} IN (SELECT seq FROM messages "
                             "WHERE session = ?)", (session,))
            for table in ("messages", "summaries", "vectors"):
                conn.execute(f"DELETE FROM {table} WHERE session = ?", (session,))

        self._transaction(delete)

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        base.check_session(session)
        stems = list(dict.fromkeys(stem(term) for term in base.search_terms(query, limit)))
        if not stems:
            return []

        def search(conn: sqlite3.Connection) -> list[tuple[int, float]]:
            frequencies = dict.fromkeys(stems, 0)
            frequencies.update(conn.execute(
                f"SELECT term, documents FROM messages_terms WHERE term IN "
                f"({', '.join('?' * (len(stems) + 1))})", ("", *stems)))
            documents = frequencies.pop("", 0)
            terms = prune_terms(frequencies, documents)
            if not terms:
                return []
            # Each term a quoted FTS5 string (a quote inside doubled): words, never operators.
            match = "text : (" + " OR ".join(
                '"' + term.replace('"', '""') + '"' for term in terms) + ")"
            if self._next_position(conn, session) < documents:  # not the only session
                match = f'tag : "{_tag(session)}" AND {match}'
            return conn.execute(_SEARCH, (match, limit, session)).fetchall()

        return [Hit(position, score) for position, score in self._transaction(search,
                                                                              begin="BEGIN")]

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        base.check_session(session)
        rows = [(session, model, position, data)
                for position, data in base.check_vectors(model, vectors)]
        self._transaction(lambda conn: conn.executemany(
            "INSERT OR IGNORE INTO vectors (session, model, position, data) "
            "VALUES (?, ?, ?, ?)", rows))

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        base.check_session(session)
        rows = self._run("SELECT position, data FROM vectors WHERE session = ? AND model = ?",
                         (session, base.check_model(model)))
        return {position: bytes(data) for position, data in rows}

    def save_summary(self, session: str, summary: Summary) -> None:
        base.check_session(session)
        self._run("INSERT INTO summaries (session, data) VALUES (?, ?) "
                  "ON CONFLICT (session) DO UPDATE SET data = excluded.data",
                  (session, base.encode_summary(summary)))

    def load_summary(self, session: str) -> Summary | None:
        base.check_session(session)
        rows = self._run("SELECT data FROM summaries WHERE session = ?", (session,))
        return base.decode_summary(rows[0][0]) if rows else None

    def locks(self, *, ttl: float = 10.0) -> FileLocks:
        """Session locks shared by every process on this file (:mod:`.locks`): ``fcntl``
        locks in ``<path>.locks``, freed by the kernel when a holder dies (no ``ttl``)."""
        return FileLocks(self.path.with_name(self.path.name + ".locks"))

    def close(self) -> None:
        with self._lock:
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


def _frequencies(documents: Iterable[list[str]]) -> Counter[str]:
    """How many of ``documents`` (each its stems) hold each stem, and under the empty term how
    many there are: the increments of ``messages_terms``."""
    counts: Counter[str] = Counter()
    for terms in documents:
        counts[""] += 1
        counts.update(set(terms))
    return counts


def _tag(session: str) -> str:
    """The session's word in the index: 39 digits (no stemmer changes them, no text is
    searched for them: query terms are matched in the text column only)."""
    digest = hashlib.blake2b(session.encode("utf-8"), digest_size=16).digest()
    return str(int.from_bytes(digest, "big")).zfill(39)
