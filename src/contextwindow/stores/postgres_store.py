"""PostgreSQL persistence (extra ``contextwindow[postgres]``): many app servers, one database.

Four tables (in ``schema`` if given, else the connection's ``search_path``)::

    contextwindow_messages  (seq bigserial PRIMARY KEY, session text, id text, data text,
                             position bigint, search_text text,
                             tsv tsvector GENERATED ALWAYS AS
                                 (to_tsvector('english', search_text)) STORED,
                             UNIQUE (session, id), UNIQUE (session, position))
    contextwindow_terms     (session text, lexeme text, documents bigint,
                             PRIMARY KEY (session, lexeme))
    contextwindow_summaries (session text PRIMARY KEY, seq bigserial, data text)
    contextwindow_vectors   (session text, model text, position bigint, data bytea,
                             PRIMARY KEY (session, model, position))

Every ``append`` is one transaction (one statement in autocommit mode) under the server's
``synchronous_commit`` (``on`` by default: the commit is flushed to the WAL before ``append``
returns). ``seq`` orders a session; each writer's messages keep their order because a writer's
next insert starts after its previous one committed. ``position`` (the message's 0-based index
in its session) is the session's last one plus one; two writers that compute the same one
collide on the unique index, and the loser inserts again after the winner committed, so
positions follow ``seq``.

Recall: the message's indexed text is a column of its own row and ``tsv`` is generated from
it, with a GIN index on ``tsv``: the index cannot disagree with the message, whatever crashes.
``contextwindow_terms`` holds each lexeme's document frequency in its session (how many of the
session's messages have it in ``tsv``), and under the empty lexeme (no tsvector has one) the
session's number of messages; the append statement writes them with the messages (one
statement, so one transaction) and ``delete`` deletes them with the session. A search looks up
the frequencies of the lexemes PostgreSQL makes of each query term (``to_tsvector('english',
term)``, the parser and stemmer of ``tsv``), keeps the terms
:func:`~contextwindow.retrieval.text.prune_terms` keeps (all of them unless their postings
exceed its work bound), and runs ``websearch_to_tsquery('english', ...)`` of those terms
joined by ``or``, ranked by ``ts_rank(tsv, query, 1)`` (term frequency, divided by 1 + the log
of the message's length). That rank is per message: PostgreSQL keeps no corpus statistics, so
a word's rarity does not count in the ranking, only in which terms are searched. Tables made
before the index existed are migrated when the store opens: the columns are added and filled,
and tables made before the document frequencies get theirs counted from ``tsv``, in one
transaction. Writers of a version without the frequencies must not write to the tables once
they have them (their messages would be stored but not counted, so not found by a term only
they hold).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..errors import StoreError
from ..messages import Message, Summary
from ..retrieval.text import Hit, indexed_text, prune_terms
from . import base
from .locks import lock_key
from .postgres_aio import AsyncAppends

MESSAGES_TABLE = "contextwindow_messages"
SUMMARIES_TABLE = "contextwindow_summaries"
VECTORS_TABLE = "contextwindow_vectors"
TERMS_TABLE = "contextwindow_terms"
_SCHEMA_LOCK = 0x636F6E74  # pg_advisory_xact_lock key: creating the tables is serialised
_POSITION_INDEX = f"{MESSAGES_TABLE}_by_position"
_RETRIES = 1000  # inserts lost to concurrent writers of the session (each loss is a win elsewhere)
_TSV = "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED"
# The document-frequency increments of the messages ``{source}`` holds (rows of session and
# tsv): one per distinct lexeme of each message, and one per message under the empty lexeme.
# In (session, lexeme) order, so concurrent writers of a session lock its rows in one order
# (the message count first) and cannot deadlock.
_COUNT_TERMS = (
    "INSERT INTO {terms} AS t (session, lexeme, documents) "
    "SELECT m.session, s.lexeme, count(*) FROM {source} AS m, "
    "unnest(array_append(tsvector_to_array(m.tsv), '')) AS s(lexeme) "
    "GROUP BY m.session, s.lexeme ORDER BY m.session, s.lexeme "
    "ON CONFLICT (session, lexeme) DO UPDATE SET documents = t.documents + excluded.documents")


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


class PostgresStore(AsyncAppends):
    """All sessions in two PostgreSQL tables.

    ``dsn`` is a libpq connection string or URL (``postgresql://user:pw@host:5432/db``). The
    tables are created if missing. One connection per store, shared by threads under a lock;
    open one store per process (a connection does not survive ``fork``). When the connection
    breaks (server restart, network), a call reconnects and tries once more; an ``append``
    whose commit may have happened first checks whether its message is already there, so it is
    stored once.
    """

    _retries = _RETRIES

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
        vectors, terms = table(VECTORS_TABLE), table(TERMS_TABLE)
        self._messages_table, self._terms_table = messages, terms
        self._sql = {
            # One statement for any number of messages, numbered after the session's last,
            # and their document frequencies: one transaction.
            "append": sql.SQL(
                "WITH added AS (INSERT INTO {messages} (session, id, data, position, "
                "search_text) SELECT %s, v.id, v.data, (SELECT COALESCE(MAX(position), -1) "
                "FROM {messages} WHERE session = %s) + v.n, v.text FROM unnest(%s::text[], "
                "%s::text[], %s::text[]) WITH ORDINALITY AS v(id, data, text, n) ORDER BY v.n "
                "RETURNING session, tsv) " + _COUNT_TERMS)
            .format(messages=messages, terms=terms, source=sql.Identifier("added")),
            "count_terms": sql.SQL(_COUNT_TERMS).format(terms=terms, source=messages),
            # Per query term (in order): its lexemes, how many of them the session has, and
            # their summed document frequencies; and the session's number of messages. Each
            # lexeme is one primary-key lookup (a subquery, whatever the table's statistics:
            # a join may read all the session's rows).
            "frequencies": sql.SQL(
                "SELECT array_remove(array_agg(l.lexeme ORDER BY l.lexeme), NULL), "
                "count(l.documents), COALESCE(sum(l.documents), 0)::bigint, "
                "(SELECT documents FROM {0} WHERE session = %s AND lexeme = '') "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS w(term, n) LEFT JOIN LATERAL "
                "(SELECT x.lexeme, (SELECT documents FROM {0} WHERE session = %s "
                "AND lexeme = x.lexeme) AS documents FROM unnest(tsvector_to_array("
                "to_tsvector('english', w.term))) AS x(lexeme)) AS l ON true "
                "GROUP BY w.n ORDER BY w.n").format(terms),
            "search": sql.SQL(
                "SELECT position, ts_rank(tsv, q, 1) AS score FROM {}, "
                "websearch_to_tsquery('english', %s) AS q WHERE session = %s AND tsv @@ q "
                "ORDER BY score DESC, position DESC LIMIT %s").format(messages),
            "save_vector": sql.SQL(
                "INSERT INTO {} (session, model, position, data) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING").format(vectors),
            "load_vectors": sql.SQL("SELECT position, data FROM {} WHERE session = %s AND "
                                    "model = %s").format(vectors),
            "delete_vectors": sql.SQL("DELETE FROM {} WHERE session = %s").format(vectors),
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
            # Every append locks its session's message count (the first of its frequency
            # rows) until it commits: a delete that takes it first waits for the appends in
            # flight, then deletes their messages with the rest (each statement of the
            # transaction sees what committed before it); one that deleted first could leave
            # an append's messages and some of their frequencies.
            "lock_terms": sql.SQL("SELECT 1 FROM {} WHERE session = %s AND lexeme = '' "
                                  "FOR UPDATE").format(terms),
            "delete_terms": sql.SQL("DELETE FROM {} WHERE session = %s").format(terms),
            "delete_summary": sql.SQL("DELETE FROM {} WHERE session = %s").format(summaries),
            "save_summary": sql.SQL(
                "INSERT INTO {} (session, data) VALUES (%s, %s) "
                "ON CONFLICT (session) DO UPDATE SET data = excluded.data").format(summaries),
            "load_summary": sql.SQL("SELECT data FROM {} WHERE session = %s").format(summaries),
        }
        def index(suffix: str) -> Any:
            return sql.Identifier(f"{MESSAGES_TABLE}_{suffix}")

        self._ddl = [
            *([sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))]
              if schema else []),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, "
                    "session text NOT NULL, id text NOT NULL, data text NOT NULL, "
                    "position bigint NOT NULL, search_text text NOT NULL, " + _TSV + ", "
                    "UNIQUE (session, id))").format(messages),
        ]
        self._indexes_ddl = [  # after the migration: they need its columns
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (session, seq)")
            .format(index("by_session"), messages),
            sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (session, position)")
            .format(sql.Identifier(_POSITION_INDEX), messages),
            # Without a pending list: each append updates the index itself, so a search never
            # scans unmerged entries (with fastupdate, a recently filled table is searched by
            # a sequential scan until vacuum merges them).
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (tsv) "
                    "WITH (fastupdate = off)").format(index("words"), messages),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (session text PRIMARY KEY, "
                    "seq bigserial NOT NULL, data text NOT NULL)").format(summaries),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (session text NOT NULL, model text NOT NULL, "
                    "position bigint NOT NULL, data bytea NOT NULL, "
                    "PRIMARY KEY (session, model, position))").format(vectors),
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
                self._migrate(conn)
                self._count_terms(conn)
                for statement in self._indexes_ddl:
                    conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot create the tables in {self.where}: {exc}") from exc
        self._conn = conn

    def _migrate(self, conn: Any) -> None:
        """Give a messages table made before the recall index its columns, filled from the
        stored messages (inside the table-creating transaction)."""
        sql = self._psycopg.sql
        table = self._messages_table
        name = table.as_string(conn)
        if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                        "AND attname = 'tsv' AND NOT attisdropped", (name,)).fetchone():
            return
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN position bigint, "
                             "ADD COLUMN search_text text").format(table))
        rows = conn.execute(sql.SQL("SELECT seq, session, data FROM {} ORDER BY seq")
                            .format(table)).fetchall()
        conn.cursor().executemany(
            sql.SQL("UPDATE {} SET search_text = %s, position = %s WHERE seq = %s").format(table),
            [(text, position, seq) for seq, text, _, position in base.backfill(rows)])
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN position SET NOT NULL, "
                             "ALTER COLUMN search_text SET NOT NULL, ADD COLUMN " + _TSV)
                     .format(table))

    def _count_terms(self, conn: Any) -> None:
        """Create the document-frequency table if it is missing, counted from the stored
        messages' ``tsv`` (an empty count for new tables; inside the table-creating
        transaction, with the messages locked against writers until it commits)."""
        sql = self._psycopg.sql
        if conn.execute("SELECT to_regclass(%s)",
                        (self._terms_table.as_string(conn),)).fetchone()[0] is not None:
            return
        conn.execute(sql.SQL("CREATE TABLE {} (session text NOT NULL, lexeme text NOT NULL, "
                             "documents bigint NOT NULL, PRIMARY KEY (session, lexeme))")
                     .format(self._terms_table))
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(self._messages_table))
        conn.execute(self._sql["count_terms"])

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
        params = self._append_params(session, messages)
        if params is None:
            return
        ids, data = params[2], params[3]
        state = {"tries": 0}

        def insert(conn: Any) -> None:
            state["tries"] += 1
            if state["tries"] > 1:
                # The first try broke the connection: its commit may or may not have happened.
                # If its first message is there, it did; an id with other data is a duplicate.
                row = conn.execute(self._sql["load_one"], (session, ids[0])).fetchone()
                if row is not None and row[0] == data[0]:
                    return
            for _ in range(_RETRIES):
                try:  # autocommit: one statement, one transaction, however many messages
                    conn.execute(self._sql["append"], params)
                    return
                except self._psycopg.errors.UniqueViolation as exc:
                    if not self._lost_race(exc):
                        raise
            raise self._lost(session)

        self._run(insert, duplicate=self._duplicate(session, ids))

    def _append_params(self, session: str, messages: list[Message]) -> tuple[Any, ...] | None:
        """The append statement's parameters (None: nothing to append), after the checks."""
        base.check_session(session)
        for message in messages:
            _check_id(message)
        if not messages:
            return None
        return (session, session, [message.id for message in messages],
                [base.encode_message(message) for message in messages],
                [indexed_text(message) for message in messages])

    def _duplicate(self, session: str, ids: list[str]) -> str:
        return (f"message id {', '.join(map(repr, ids))} is already stored in session "
                f"{session!r} of {self.where}")

    def _lost_race(self, exc: Any) -> bool:
        """A unique violation on the session's positions: another writer appended first."""
        return bool(exc.diag.constraint_name == _POSITION_INDEX)

    def _lost(self, session: str) -> StoreError:
        return StoreError(f"{self.where}: {_RETRIES} appends to session {session!r} lost to "
                          "concurrent writers")

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
            with conn.transaction():  # every table or none
                for statement in ("lock_terms", "delete_messages", "delete_terms",
                                  "delete_summary", "delete_vectors"):
                    conn.execute(self._sql[statement], (session,))

        self._run(delete)

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        base.check_session(session)
        terms = base.search_terms(query, limit)
        if not terms:
            return []

        def search(conn: Any) -> list[tuple[int, float]]:
            rows = conn.execute(self._sql["frequencies"], (session, terms, session)).fetchall()
            # Pruned by the terms' lexemes (two words with one stem are one term): each
            # one's document frequency is its lexemes' summed ones (what the GIN index reads
            # for it), 0 if it has none (a stop word) or one the session lacks.
            keys = [" ".join(lexemes) for lexemes, *_ in rows]  # "" for a stop word
            frequencies = {key: documents if found == len(lexemes) > 0 else 0
                           for key, (lexemes, found, documents, _) in zip(keys, rows,
                                                                          strict=True)}
            kept = set(prune_terms(frequencies, rows[0][3] or 0))
            if not kept:  # no term is in the session: nothing can match
                return []
            # The terms left out are those over the bound; terms not found stay, as they cost
            # nothing and ts_rank divides an "or" query's rank by its number of lexemes: a
            # search within the bound is the query of all the terms, its scores included.
            words = [term for term, key in zip(terms, keys, strict=True)
                     if key in kept or not frequencies[key]]
            # Bare words joined by "or": websearch_to_tsquery reads nothing else as an
            # operator, and never raises on its input. Planned for its words and session each
            # time (not prepared: a generic plan cannot tell a session's share of the table
            # or the words' selectivity, and picks the GIN index, reading every session's
            # matches: 62 against 13 ms a search in one session of 100 x 1,000 messages).
            return conn.execute(self._sql["search"], (" or ".join(words), session, limit),
                                prepare=False).fetchall()

        return [Hit(position, float(score)) for position, score in self._run(search)]

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        base.check_session(session)
        rows = [(session, model, position, data)
                for position, data in base.check_vectors(model, vectors)]

        def save(conn: Any) -> None:
            with conn.transaction():
                conn.cursor().executemany(self._sql["save_vector"], rows)

        if rows:
            self._run(save)

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        base.check_session(session)
        params = (session, base.check_model(model))
        rows = self._run(lambda conn: conn.execute(self._sql["load_vectors"],
                                                   params).fetchall())
        return {position: bytes(data) for position, data in rows}

    def save_summary(self, session: str, summary: Summary) -> None:
        base.check_session(session)
        data = base.encode_summary(summary)
        self._run(lambda conn: conn.execute(self._sql["save_summary"], (session, data)))

    def load_summary(self, session: str) -> Summary | None:
        base.check_session(session)
        rows = self._run(lambda conn: conn.execute(self._sql["load_summary"],
                                                   (session,)).fetchall())
        return base.decode_summary(rows[0][0]) if rows else None

    def locks(self, *, ttl: float = 10.0) -> PostgresLocks:
        """Session locks shared by every process on this database (:mod:`.locks`): advisory
        locks on a connection of their own, freed when a holder's connection closes (no
        ``ttl``)."""
        return PostgresLocks(self.dsn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()


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
                row = self._conn.execute(sql, (key,)).fetchone()  # one row: SELECT f(key)
                return row is not None and bool(row[0])
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
