"""Store semantics shared by the built-in stores (ordering, isolation, ids, summaries, errors)."""

from __future__ import annotations

import sqlite3

import pytest

from contextwindow.errors import StoreError
from contextwindow.messages import Message, Summary, ToolCall
from contextwindow.stores import InMemoryStore, SQLiteStore, Store


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> Store:
    return InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")


def test_round_trip_ordering_and_isolation(store: Store) -> None:
    messages = [
        Message(role="system", content="sys"),
        Message(role="user", content="lone surrogate \ud800, NUL \x00, emoji 🎉", name="ann"),
        Message(role="assistant", tool_calls=(ToolCall("c1", "f", '{"a": 1}'),)),
        Message(role="tool", tool_call_id="c1", content=""),
    ]
    for message in messages:
        store.append("s1", message)
    store.append("s2", Message(role="user", content="other"))
    loaded = store.load("s1")
    assert loaded == messages and [m.id for m in loaded] == [m.id for m in messages]
    assert [m.content for m in store.load("s2")] == ["other"]
    assert store.load("unknown") == []
    assert store.sessions() == ["s1", "s2"]


def test_duplicate_ids_and_bad_sessions_are_rejected(store: Store) -> None:
    message = Message(role="user", content="x", id="fixed")
    store.append("s", message)
    with pytest.raises(StoreError):
        store.append("s", message)
    store.append("t", message)  # ids are per session
    for bad in ("", None, 3, "x" * 513, "\udc80"):
        with pytest.raises(StoreError):
            store.append(bad, message)  # type: ignore[arg-type]
    assert len(store.load("s")) == 1


def test_summaries(store: Store) -> None:
    assert store.load_summary("s") is None
    store.save_summary("s", Summary("first", 1, 5))
    store.save_summary("s", Summary("second", 1, 9))
    assert store.load_summary("s") == Summary("second", 1, 9)
    store.delete("s")
    assert store.load_summary("s") is None


def test_sqlite_rejects_a_file_that_is_not_a_database(tmp_path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        SQLiteStore(path)


def test_sqlite_reports_corrupt_rows(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.append("s", Message(role="user", content="fine"))
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("INSERT INTO messages (session, id, data) VALUES ('s', 'bad', '{not json')")
    with pytest.raises(StoreError, match="corrupt"):
        store.load("s")
