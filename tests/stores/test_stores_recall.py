"""The recall index every store keeps: ranking by words, consistency with the messages (one
transaction, or derived from them), hostile text, session isolation, migration of stores made
before the index (tests/stores/test_stores_migration.py), and the embedding vectors. Crashes:
tests/stores/test_store_reliability.py."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextwindow.errors import StoreError
from contextwindow.messages import Message, ToolCall
from contextwindow.retrieval.text import MAX_POSTINGS, query_terms, stem

# The fixtures (store_backend, durable_store_backend, ...) come from tests/store_fixtures.py.
pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend, postgres_frequencies, records

TOPICS = [
    "I visited Paris last Thursday with my sister",  # 0
    "The cat sat on the mat all afternoon",  # 1
    "We are visiting London next week for the museum",  # 2
    "My favourite colour is blue, like the sea",  # 3
    "Remind me to book the museum tickets",  # 4
]


def fill(store: Any, session: str, texts: list[str]) -> None:
    store.append_many(session, [Message(role="user" if i % 2 == 0 else "assistant",
                                        content=text) for i, text in enumerate(texts)])


def positions(hits: list[Any]) -> list[int]:
    return [hit.index for hit in hits]


# -- ranking -------------------------------------------------------------------------------
def test_search_finds_a_sessions_messages_by_their_words(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    fill(store, "s", TOPICS)
    assert positions(store.search("s", "when did I visit Paris?"))[0] == 0
    assert positions(store.search("s", "paris")) == [0]
    assert sorted(positions(store.search("s", "visiting"))) == [0, 2]  # stemmed both ways
    assert sorted(positions(store.search("s", "museum tickets"))) == [2, 4]
    assert positions(store.search("s", "museum tickets"))[0] == 4  # both words beat one
    assert store.search("s", "the of and") == []  # stop words only
    assert store.search("s", "zebra") == [] and store.search("s", "") == []
    assert store.search("other", "paris") == []
    hits = store.search("s", "museum visit blue cat", limit=2)
    assert len(hits) == 2
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert all(hit.score > 0 for hit in store.search("s", "museum visit blue cat"))


def test_equal_scores_put_the_newest_first(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    fill(store, "s", ["apples and pears", "nothing", "apples and pears", "apples and pears"])
    hits = store.search("s", "apples")
    assert positions(hits) == [3, 2, 0]
    assert len({hit.score for hit in hits}) == 1


def test_a_query_over_the_work_bound_scores_its_rare_terms(store_backend: Backend) -> None:
    """Every store leaves out a term in most messages once a query's postings exceed
    MAX_POSTINGS (retrieval.text.prune_terms), from the document frequencies it keeps."""
    store, _ = store_backend.new()
    fill(store, "s", ["common filler"] * MAX_POSTINGS + ["rare common"])
    assert positions(store.search("s", "rare common")) == [MAX_POSTINGS]
    assert positions(store.search("s", "rare commonly zebra")) == [MAX_POSTINGS]  # one stem
    assert len(store.search("s", "common")) == 20  # the rarest term is always scored


def test_postgres_ranks_a_search_within_the_bound_as_the_query_of_all_its_terms(
        postgres_backend: Backend) -> None:
    """Under the work bound (and with terms the session lacks, or stop words), a search is
    the unpruned query: the same hits and the same scores (ts_rank divides by the number of
    the query's lexemes, found or not). The bound is the session's: a large session beside it
    prunes nothing of its queries."""
    store, _ = postgres_backend.new()
    fill(store, "big", ["museum cat visit"] * MAX_POSTINGS)
    fill(store, "s", TOPICS * 3)
    for query in ["when did I visit Paris?", "museum tickets", "museum visit blue cat",
                  "the cat sat on the mat", "zebra museum", "visiting visited London"]:
        every = store._run(lambda conn, q=query: conn.execute(
            store._sql["search"], (" or ".join(query_terms(q)), "s", 20)).fetchall())
        assert [(hit.index, hit.score) for hit in store.search("s", query)] == every
        assert every
    assert store.search("s", "zebra giraffe") == [] == store.search("s", "the of")


def test_sqlite_ranks_a_lone_session_as_one_among_others(tmp_path: Any) -> None:
    """A session alone in its file is searched without its tag: the hits and scores are
    those of the tagged query that a file of several sessions runs."""
    from contextwindow.stores import sqlite

    store = sqlite.SQLiteStore(tmp_path / "s.db")
    fill(store, "s", TOPICS * 3)
    for query in ["when did I visit Paris?", "museum tickets", "museum visit blue cat",
                  "the cat sat on the mat"]:
        words = " OR ".join(f'"{stem(term)}"' for term in query_terms(query))
        tagged = store._run(sqlite._SEARCH, (f'tag : "{sqlite._tag("s")}" AND text : ({words})',
                                              20, "s"))
        assert [(hit.index, hit.score) for hit in store.search("s", query)] == tagged
        assert tagged


def test_tool_calls_names_and_parts_are_found(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    call = ToolCall("c1", "get_weather", '{"city": "Lyon"}')
    store.append_many("s", [
        Message(role="user", content="hello", name="marguerite"),
        Message(role="assistant", content=None, tool_calls=(call,)),
        Message(role="tool", content="sunny and warm", tool_call_id="c1"),
        Message(role="user", content=[{"type": "text", "text": "look at this giraffe"},
                                      {"type": "image_url", "image_url": {"url": "x"}}]),
    ])
    assert positions(store.search("s", "Marguerite")) == [0]
    assert positions(store.search("s", "weather in Lyon")) == [1]
    assert positions(store.search("s", "sunny")) == [2]
    assert positions(store.search("s", "giraffe")) == [3]


def test_positions_follow_load_across_appends_and_reopens(durable_store_backend: Backend
                                                          ) -> None:
    store, spec = durable_store_backend.new()
    store.append("s", Message(role="user", content="first apple"))
    fill(store, "t", ["unrelated apple"] * 3)
    store.append_many("s", [Message(role="user", content="second pear"),
                            Message(role="user", content="third apple")])
    store.close()
    again = durable_store_backend.open(spec)
    again.append("s", Message(role="user", content="fourth apple"))
    loaded = again.load("s")
    hits = again.search("s", "apple")
    assert sorted(positions(hits)) == [0, 2, 3]
    assert all("apple" in (loaded[hit.index].content or "") for hit in hits)
    assert positions(again.search("s", "pear")) == [1]


def test_search_arguments_are_checked(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    fill(store, "s", TOPICS)
    assert store.search("s", "paris", limit=0) == []
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(StoreError, match="limit"):
            store.search("s", "paris", limit=bad)
    for query in (None, b"paris", 3):
        with pytest.raises(StoreError, match="query must be a string"):
            store.search("s", query)  # type: ignore[arg-type]
    for session in ("", "x" * 513, "\udc00", "a\x00b"):
        with pytest.raises(StoreError):
            store.search(session, "paris")


# -- consistency -------------------------------------------------------------------------
def test_a_failed_append_many_stores_neither_messages_nor_index(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    store.append("s", Message(role="user", content="kept walrus", id="dup"))
    with pytest.raises(StoreError):
        store.append_many("s", [Message(role="user", content="lost pelican", id="new"),
                                Message(role="user", content="lost heron", id="dup")])
    with pytest.raises(StoreError):
        store.append("s", Message(role="user", content="lost again pelican", id="dup"))
    assert [m.id for m in store.load("s")] == ["dup"]
    assert store.search("s", "pelican heron") == []
    store.append("s", Message(role="user", content="later pelican"))
    assert positions(store.search("s", "pelican walrus")) in ([1, 0], [0, 1])
    assert positions(store.search("s", "pelican")) == [1]


def test_sqlite_index_row_and_message_commit_together(tmp_path: Any) -> None:
    """The index write itself fails (the second message's position row is taken) after the
    first message and its rows were written: the transaction takes all of them back."""
    from contextwindow.stores import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    store.append("s", Message(role="user", content="zero"))
    seq = store._run("SELECT MAX(seq) FROM messages")[0][0]
    store._run("INSERT INTO messages_positions (seq, position) VALUES (?, 0)", (seq + 2,))
    with pytest.raises(StoreError):
        store.append_many("s", [Message(role="user", content="one otter"),
                                Message(role="user", content="two otters")])
    assert [m.content for m in store.load("s")] == ["zero"]
    assert store._run("SELECT COUNT(*) FROM messages") == [(1,)]
    assert store._run("SELECT rowid, text FROM messages_fts") == [(seq, "zero")]
    assert store._run("SELECT seq FROM messages_positions ORDER BY seq") == [(seq,), (seq + 2,)]
    assert dict(store._run("SELECT term, documents FROM messages_terms")) == {"": 1, "zero": 1}
    assert store.search("s", "otter") == []


def test_postgres_index_and_message_are_one_row(postgres_backend: Backend,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The indexed text is a column of the message's row and its tsvector is generated from
    it: when the index side fails (a tsvector over PostgreSQL's 1 MB limit), the whole
    append_many is refused."""
    from contextwindow.stores import postgres_store

    store, _ = postgres_backend.new()
    store.append("s", Message(role="user", content="zero"))
    too_big = " ".join(f"w{i}x" for i in range(200_000))
    monkeypatch.setattr(postgres_store, "indexed_text",
                        lambda m: too_big if m.content == "two" else (m.content or ""))
    with pytest.raises(StoreError, match="tsvector"):
        store.append_many("s", [Message(role="user", content="one"),
                                Message(role="user", content="two")])
    assert [m.content for m in store.load("s")] == ["zero"]
    table = f'"{store.schema}".contextwindow_messages'
    rows = store._run(lambda conn: conn.execute(
        f"SELECT position, search_text, tsv IS NOT NULL FROM {table}").fetchall())
    assert rows == [(0, "zero", True)]


def test_postgres_document_frequencies_follow_adds_and_deletes(postgres_backend: Backend
                                                               ) -> None:
    """The document frequencies are written with the messages (sync and async appends), not
    by a failed append, and go with the session."""
    store, _ = postgres_backend.new()
    fill(store, "s", ["Paris trip", "paris again and again", "London"])
    fill(store, "t", ["paris"])
    stored, counted = postgres_frequencies(store)
    assert stored == counted == {("s", ""): 3, ("s", "pari"): 2, ("s", "trip"): 1,
                                 ("s", "london"): 1, ("t", ""): 1, ("t", "pari"): 1}
    store.append("s", Message(role="user", content="kept", id="dup"))
    with pytest.raises(StoreError):
        store.append_many("s", [Message(role="user", content="lost paris"),
                                Message(role="user", content="lost", id="dup")])
    asyncio.run(store.aappend_many("s", [Message(role="user", content="Paris by train")]))
    stored, counted = postgres_frequencies(store)
    assert stored == counted
    assert (stored[("s", "")], stored[("s", "pari")], stored[("s", "kept")]) == (5, 3, 1)
    assert ("s", "lost") not in stored and stored[("s", "train")] == 1
    store.delete("s")
    assert postgres_frequencies(store) == ({("t", ""): 1, ("t", "pari"): 1},) * 2
    fill(store, "s", ["london"])
    assert postgres_frequencies(store)[0] == {("t", ""): 1, ("t", "pari"): 1, ("s", ""): 1,
                                              ("s", "london"): 1}


def test_postgres_delete_waits_for_an_append_in_flight(postgres_backend: Backend) -> None:
    """A delete while another writer's append is uncommitted waits for it, then deletes its
    messages and frequencies with the rest: none of them are left over."""
    import threading
    import time

    import psycopg

    store, spec = postgres_backend.new()
    fill(store, "s", ["paris trip"])
    params = store._append_params("s", [Message(role="user", content="paris again"),
                                        Message(role="user", content="brand new words")])
    pid = store._conn.info.backend_pid
    with psycopg.connect(spec["dsn"], autocommit=True) as other:
        with other.transaction():
            other.execute(store._sql["append"], params)  # in flight: not committed
            deleter = threading.Thread(target=store.delete, args=("s",))
            deleter.start()
            for _ in range(1000):  # until the delete waits for a lock the append holds
                if other.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                 (pid,)).fetchone() == ("Lock",):
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the delete never waited for the append")
        deleter.join()
    assert store.load("s") == []
    assert postgres_frequencies(store) == ({}, {})


def test_redis_index_catches_up_with_other_writers(redis_backend: Backend) -> None:
    """RedisStore derives its index from the list: another store object (another process)
    appending, deleting and writing the session again is seen by the next search."""
    writer, spec = redis_backend.new()
    from contextwindow.stores import RedisStore

    reader = RedisStore(spec["url"], prefix=spec["prefix"], recall_sessions=1)
    try:
        fill(writer, "s", ["alpha one", "beta two"])
        assert positions(reader.search("s", "alpha")) == [0]
        fill(writer, "s", ["gamma alpha"])
        assert positions(reader.search("s", "gamma")) == [2]  # caught up
        writer.delete("s")
        assert reader.search("s", "alpha") == []
        # Written again, longer than what the reader indexed: its index is of an earlier
        # life of the session (appending to it would keep "alpha one" at 0).
        fill(writer, "s", ["fresh start", "delta", "epsilon", "alpha again"])
        assert positions(reader.search("s", "alpha")) == [3]
        assert reader.search("s", "gamma") == []
        writer.delete("s")
        fill(writer, "s", ["x"] * 5 + ["alpha late"])
        assert positions(reader.search("s", "alpha")) == [5]
        fill(writer, "t", ["other alpha"])
        assert positions(reader.search("t", "alpha")) == [0]  # evicts s: one session kept
        assert positions(reader.search("s", "alpha late")) == [5]
    finally:
        reader.close()
    with pytest.raises(StoreError, match="recall_sessions"):
        RedisStore(spec["url"], prefix=spec["prefix"], recall_sessions=0)


# -- hostile text ------------------------------------------------------------------------
HOSTILE = ['"', "'", '""', "NEAR(", "NEAR(a b, 3)", "*", "a*", ":", "col:term", "-", "-paris",
           "OR", "AND", "NOT", "(", ")", "((", "^", "^paris", "{a b}", "+", "$1", "%s",
           "%(x)s", "\\", "'; DROP TABLE messages; --",
           "'; DROP TABLE contextwindow_messages; --", "🎉", "e\u0301", "\u0301", "\u200d",
           "x" * 3000, "\x00", "\ud800", "<->", "&", "|", "!", "paris", "visiting", "museum",
           "Paris:*", "!paris", "\u2028", "日本語", "Ⅻ", "ﬁ"]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8)),
                        max_size=12).map(" ".join)


@st.composite
def hostile_messages(draw: Any) -> Message:
    content = draw(hostile_text)
    if draw(st.integers(0, 3)) == 0:
        call = ToolCall("c1", draw(hostile_text) or "f", draw(hostile_text))
        return Message(role="assistant", content=content or None, tool_calls=(call,))
    return Message(role="user", content=content, name=draw(st.one_of(st.none(),
                                                                        hostile_text)) or None)


def test_hostile_text_never_raises_and_means_only_its_words(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    counter = iter(range(10**6))

    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(messages=st.lists(hostile_messages(), min_size=1, max_size=8),
           queries=st.lists(hostile_text, min_size=1, max_size=4))
    def check(messages: list[Message], queries: list[str]) -> None:
        session = f"hostile-{next(counter)}"
        store.append_many(session, messages)
        store.append("neighbour-" + session, Message(role="user", content=" ".join(HOSTILE)))
        assert records(store.load(session)) == records(messages)
        for query in [*queries, *HOSTILE]:
            hits = store.search(session, query)
            assert hits == store.search(session, " ".join(query_terms(query)))
            assert len({hit.index for hit in hits}) == len(hits)
            assert all(0 <= hit.index < len(messages) for hit in hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            if not query_terms(query):
                assert hits == []

    check()


def test_quoted_and_operator_laden_queries_find_the_plain_words(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    fill(store, "s", TOPICS)
    plain = store.search("s", "museum paris")
    assert sorted(positions(plain)) == [0, 2, 4]
    for query in ['"museum" "paris*', "museum -paris", "museum AND NOT paris",
                  "'; -- museum; paris --", "(museum OR paris", "^museum :paris",
                  "museum & !paris | <->", "MUSEUM Paris 🎉", "museum: (paris)) -*"]:
        assert store.search("s", query) == plain, query


# -- sessions ----------------------------------------------------------------------------
LOOK_ALIKES = ["a", "a:b", "a:*", "*", "%", "msgs:a", "'; DROP TABLE messages; --", "é", "a "]


def test_recall_never_crosses_sessions(store_backend: Backend) -> None:
    """Sessions with look-alike ids in one database, written through two store objects: a
    search returns only its own session's messages, whatever the other sessions hold."""
    store, spec = store_backend.new()
    other = store_backend.open(spec) if store_backend.durable else store
    for n, session in enumerate(LOOK_ALIKES):
        writer = store if n % 2 == 0 else other
        fill(writer, session, [f"common word{n}", "common filler"] + ["shared"] * n)
    for n, session in enumerate(LOOK_ALIKES):
        for reader in (store, other):
            assert positions(reader.search(session, f"word{n}")) == [0]
            assert sorted(positions(reader.search(session, "common"))) == [0, 1]
            assert sorted(positions(reader.search(session, "shared"))) == list(range(2, 2 + n))
            for m in range(len(LOOK_ALIKES)):
                if m != n:
                    assert reader.search(session, f"word{m}") == []
    store.delete("a")
    assert store.search("a", "common") == [] and other.search("a", "common") == []
    assert positions(other.search("a:b", "word1")) == [0]


# -- vectors -----------------------------------------------------------------------------
def vector(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def test_vectors_round_trip_per_session_and_model_and_go_with_delete(
        store_backend: Backend) -> None:
    store, _ = store_backend.new()
    fill(store, "s", TOPICS)
    store.save_vectors("s", "minilm", {0: vector(1, 0), 2: vector(0.5, -0.25)})
    store.save_vectors("s", "minilm", {0: vector(9, 9), 1: vector(0, 1)})  # 0 is kept
    store.save_vectors("s", "other/model:v2", {0: vector(3)})
    store.save_vectors("t", "minilm", {0: b""})
    store.save_vectors("s", "minilm", {})
    assert store.load_vectors("s", "minilm") == {0: vector(1, 0), 1: vector(0, 1),
                                                 2: vector(0.5, -0.25)}
    assert store.load_vectors("s", "other/model:v2") == {0: vector(3)}
    assert store.load_vectors("s", "other") == {} and store.load_vectors("u", "minilm") == {}
    assert store.load_vectors("t", "minilm") == {0: b""}
    store.delete("s")
    assert store.load_vectors("s", "minilm") == {} == store.load_vectors("s", "other/model:v2")
    assert store.load_vectors("t", "minilm") == {0: b""}


def test_vectors_survive_a_reopen(durable_store_backend: Backend) -> None:
    store, spec = durable_store_backend.new()
    store.save_vectors("s", "m", {5: vector(1, 2, 3)})
    store.close()
    assert durable_store_backend.open(spec).load_vectors("s", "m") == {5: vector(1, 2, 3)}


@pytest.mark.parametrize(("model", "vectors", "why"), [
    ("", {0: b"x"}, "model name"), ("a\x00b", {0: b"x"}, "model name"),
    ("\ud800", {0: b"x"}, "model name"), ("m" * 513, {0: b"x"}, "model name"),
    (None, {0: b"x"}, "model name"), ("m", {-1: b"x"}, "index"), ("m", {True: b"x"}, "index"),
    ("m", {"0": b"x"}, "index"), ("m", {0: "text"}, "bytes"), ("m", [(0, b"x")], "mapping"),
])
def test_bad_vectors_are_refused(store_backend: Backend, model: Any, vectors: Any,
                                 why: str) -> None:
    store, _ = store_backend.new()
    with pytest.raises(StoreError, match=why):
        store.save_vectors("s", model, vectors)
    assert store.load_vectors("s", "m") == {}
