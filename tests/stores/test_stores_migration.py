"""Stores made before the recall index get it when they open: a SQLite file gets its FTS5
table filled from the messages (also when its index has an earlier layout), PostgreSQL tables
get their columns filled and their document frequencies counted, each in one transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from contextwindow.errors import StoreError
from contextwindow.messages import Message
from contextwindow.stores import base

# The fixtures (postgres_backend, ...) come from tests/store_fixtures.py.
pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend, postgres_frequencies


def positions(hits: list[Any]) -> list[int]:
    return [hit.index for hit in hits]


# The schemas of the stores before the recall index (commit 5449c2f), and rows as that code
# wrote them: the recall index is created and filled from them when the store opens.
OLD_SQLITE = """
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL,
                       id TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (session, id));
CREATE INDEX messages_by_session ON messages (session, seq);
CREATE TABLE summaries (session TEXT PRIMARY KEY, data TEXT NOT NULL);
"""
OLD_POSTGRES = [
    ("CREATE TABLE {s}.contextwindow_messages (seq bigserial PRIMARY KEY, "
     "session text NOT NULL, id text NOT NULL, data text NOT NULL, UNIQUE (session, id))"),
    ("CREATE INDEX contextwindow_messages_by_session ON {s}.contextwindow_messages "
     "(session, seq)"),
    ("CREATE TABLE {s}.contextwindow_summaries (session text PRIMARY KEY, "
     "seq bigserial NOT NULL, data text NOT NULL)"),
]
OLD_ROWS = [("s", "paris trip"), ("t", "paris elsewhere"), ("s", "london trip"),
            ("s", "paris again"), ("t", "berlin")]


def _old_messages() -> list[tuple[str, str, str]]:
    return [(session, f"m{n}", base.encode_message(Message(role="user", content=text,
                                                            id=f"m{n}")))
            for n, (session, text) in enumerate(OLD_ROWS)]


def _check_migrated(store: Any) -> None:
    assert [m.content for m in store.load("s")] == ["paris trip", "london trip", "paris again"]
    assert positions(store.search("s", "paris")) in ([2, 0], [0, 2])
    assert positions(store.search("t", "paris")) == [0]
    assert positions(store.search("t", "berlin")) == [1]
    store.append("s", Message(role="user", content="paris at last"))
    assert sorted(positions(store.search("s", "paris"))) == [0, 2, 3]


def test_sqlite_file_from_before_the_index_is_indexed_on_open(tmp_path: Any) -> None:
    from contextwindow.stores import SQLiteStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(OLD_SQLITE)
        raw.executemany("INSERT INTO messages (session, id, data) VALUES (?, ?, ?)",
                        _old_messages())
        raw.execute("INSERT INTO messages (session, id, data) VALUES ('t', 'bad', '{no json')")
    store = SQLiteStore(path)
    rows = store._run("SELECT f.rowid, f.tag, p.position, f.text FROM messages_fts AS f "
                      "JOIN messages_positions AS p ON p.seq = f.rowid ORDER BY f.rowid")
    s, t = rows[0][1], rows[1][1]
    assert s != t and len(s) == len(t) == 39 and (s + t).isdigit()
    assert rows == [  # the stems, stop words left out (index_terms)
        (1, s, 0, "pari trip"), (2, t, 0, "pari elsewher"), (3, s, 1, "london trip"),
        (4, s, 2, "pari"), (5, t, 1, "berlin"), (6, t, 2, "")]
    assert dict(store._run("SELECT term, documents FROM messages_terms")) == {
        "": 6, "pari": 3, "trip": 2, "elsewher": 1, "london": 1, "berlin": 1}
    with pytest.raises(StoreError, match="corrupt"):  # still reported by load, not indexed
        store.load("t")
    store.close()
    store = SQLiteStore(path)  # opening again adds nothing
    assert store._run("SELECT COUNT(*) FROM messages_fts") == [(6,)]
    assert positions(store.search("s", "paris")) in ([2, 0], [0, 2])
    store.append("s", Message(role="user", content="paris at last"))
    assert sorted(positions(store.search("s", "paris"))) == [0, 2, 3]
    assert positions(store.search("t", "berlin")) == [1]


# The earlier layouts of the SQLite recall index, and a stale row of each.
EARLIER_INDEXES = [
    # the first: the session as an unindexed column
    (("CREATE VIRTUAL TABLE messages_fts USING fts5(text, session UNINDEXED, "
      "position UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2')"),
     "INSERT INTO messages_fts (rowid, text, session, position) VALUES (1, 'stale words', 's', 0)"),
    # the second: a session tag, the text stemmed by FTS5's porter, the position in the index
    (("CREATE VIRTUAL TABLE messages_fts USING fts5(text, tag, position UNINDEXED, "
      "tokenize = 'porter unicode61 remove_diacritics 2')"),
     "INSERT INTO messages_fts (rowid, text, tag, position) VALUES (1, 'stale words', 's', 0)"),
]


@pytest.mark.parametrize(("layout", "stale_row"), EARLIER_INDEXES)
def test_sqlite_index_of_an_earlier_layout_is_built_again(tmp_path: Any, layout: str,
                                                          stale_row: str) -> None:
    """A file whose recall index has another layout gets the current one (stems, document
    frequencies), filled from the messages."""
    from contextwindow.stores import SQLiteStore

    path = tmp_path / "earlier.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(OLD_SQLITE)
        raw.executemany("INSERT INTO messages (session, id, data) VALUES (?, ?, ?)",
                        _old_messages())
        raw.execute(layout)
        raw.execute(stale_row)
    store = SQLiteStore(path)
    assert store._run("SELECT COUNT(*) FROM messages_fts") == [(5,)]
    assert store._run("SELECT text FROM messages_fts WHERE rowid = 1") == [("pari trip",)]
    assert store._run("SELECT documents FROM messages_terms WHERE term IN ('', 'pari')"
                      " ORDER BY term") == [(5,), (3,)]
    assert store.search("s", "stale") == []
    _check_migrated(store)


def test_postgres_tables_from_before_the_index_are_migrated_on_open(
        postgres_backend: Backend) -> None:
    import psycopg

    spec = postgres_backend.new_spec()
    schema = f'"{spec["schema"]}"'
    with psycopg.connect(spec["dsn"], autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        for statement in OLD_POSTGRES:
            conn.execute(statement.format(s=schema))
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.contextwindow_messages (session, id, data) "
                            "VALUES (%s, %s, %s)", _old_messages())
    store = postgres_backend.open(spec)
    _check_migrated(store)
    rows = store._run(lambda conn: conn.execute(
        f"SELECT session, position, search_text FROM {schema}.contextwindow_messages "
        "ORDER BY seq").fetchall())
    assert rows == [("s", 0, "paris trip"), ("t", 0, "paris elsewhere"), ("s", 1, "london trip"),
                    ("s", 2, "paris again"), ("t", 1, "berlin"), ("s", 3, "paris at last")]
    stored, counted = postgres_frequencies(store)
    assert stored == counted
    assert {key: stored[key] for key in [("s", ""), ("s", "pari"), ("t", ""), ("t", "pari")]} == {
        ("s", ""): 4, ("s", "pari"): 3, ("t", ""): 2, ("t", "pari"): 1}
    postgres_backend.open(spec).close()  # a second open finds the columns there
    with (psycopg.connect(spec["dsn"], autocommit=True) as conn,  # an old writer is refused
          pytest.raises(psycopg.errors.NotNullViolation)):
        conn.execute(f"INSERT INTO {schema}.contextwindow_messages (session, id, data) "
                     "VALUES ('s', 'old', '{}')")


def test_postgres_tables_from_before_the_document_frequencies_get_them_on_open(
        postgres_backend: Backend) -> None:
    """Tables with the recall index but no document frequencies (the layout before them: the
    same tables without contextwindow_terms) get them counted from the messages on open, and
    their searches are bounded from then on."""
    from contextwindow.retrieval.text import MAX_POSTINGS

    store, spec = postgres_backend.new()
    store.append_many("s", [Message(role="user", content="common filler")
                            for _ in range(MAX_POSTINGS)])
    store.append_many("t", [Message(role="user", content="rare common"),
                            Message(role="user", content="common")])
    store.append("s", Message(role="user", content="rare common"))
    store._run(lambda conn: conn.execute(f'DROP TABLE "{spec["schema"]}".contextwindow_terms'))
    store.close()
    store = postgres_backend.open(spec)
    stored, counted = postgres_frequencies(store)
    assert stored == counted == {("s", ""): MAX_POSTINGS + 1, ("s", "common"): MAX_POSTINGS + 1,
                                 ("s", "filler"): MAX_POSTINGS, ("s", "rare"): 1,
                                 ("t", ""): 2, ("t", "rare"): 1, ("t", "common"): 2}
    assert positions(store.search("s", "rare common")) == [MAX_POSTINGS]
    assert positions(store.search("t", "rare common")) == [0, 1]
    postgres_backend.open(spec).close()  # a second open finds the table there
    assert postgres_frequencies(store)[0] == stored
