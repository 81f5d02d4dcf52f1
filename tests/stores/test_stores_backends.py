"""Every store follows the same protocol with the same semantics: InMemory, SQLite, Redis and
PostgreSQL (the last two against real servers started by scripts/test-services.sh)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contextwindow.errors import ConfigError, ContextWindowError, StoreError
from contextwindow.memory import BufferMemory, TokenBufferMemory
from contextwindow.messages import Message, Summary, ToolCall
from contextwindow.stores import Store
from contextwindow.tokens import TokenCounter

# The fixtures (store_backend, durable_store_backend, ...) come from tests/store_fixtures.py.
pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend, records

COUNTER = TokenCounter.approximate()


def conversation() -> list[Message]:
    call = ToolCall(id="call_1", name="lookup", arguments='{"q": "naïve \\u0000"}')
    return [
        Message(role="system", content="You are terse.", id="m-system"),
        Message(role="user", content="lone surrogate \ud800, NUL \x00, emoji 🎉", name="ann",
                id="m-user"),
        Message(role="assistant", content=None, tool_calls=(call,), id="m-call"),
        Message(role="tool", content="", tool_call_id="call_1", id="m-tool"),
        Message(role="assistant", content="done\u2028\r\n\t", id="m-answer"),
        Message(role="developer", content="x" * 10_000),  # a generated id
    ]


def test_every_store_satisfies_the_protocol(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    assert isinstance(store, Store)


def test_append_then_load_returns_every_field_and_id_in_order(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    messages = conversation()
    for message in messages:
        store.append("s1", message)
    loaded = store.load("s1")
    assert loaded == messages
    assert records(loaded) == records(messages)
    assert [m.id for m in loaded] == [m.id for m in messages]
    assert loaded[2].tool_calls == (ToolCall("call_1", "lookup", '{"q": "naïve \\u0000"}'),)
    assert store.load("unknown") == []
    assert store.load("s") == [] and store.load("s1 ") == []


def test_duplicate_id_is_rejected_in_a_session_but_allowed_in_another(
        store_backend: Backend) -> None:
    store, _ = store_backend.new()
    first = Message(role="user", content="first", id="same")
    store.append("a", first)
    with pytest.raises(StoreError):
        store.append("a", Message(role="assistant", content="second", id="same"))
    with pytest.raises(StoreError):
        store.append("a", first)
    store.append("b", Message(role="assistant", content="other session", id="same"))
    assert records(store.load("a")) == records([first])
    assert records(store.load("b")) == [
        {"role": "assistant", "content": "other session", "id": "same"}]


def test_sessions_in_order_of_first_message_then_summary_only_ones(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    assert store.sessions() == []
    store.save_summary("z", Summary("only a summary", 0, 0))
    for session in ["b", "a", "b", "c"]:
        store.append(session, Message(role="user", content=session))
    store.save_summary("a", Summary("a's", 0, 1))
    assert store.sessions() == ["b", "a", "c", "z"]
    store.delete("a")
    assert store.sessions() == ["b", "c", "z"]
    store.append("a", Message(role="user", content="again"))
    assert store.sessions() == ["b", "c", "a", "z"]
    store.delete("z")
    store.delete("never-written")
    assert store.sessions() == ["b", "c", "a"]


def test_summary_is_replaced_and_kept_per_session(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    assert store.load_summary("s") is None
    store.append("s", Message(role="user", content="hi"))
    store.save_summary("s", Summary("first \ud800\x00 é", 0, 3))
    store.save_summary("s", Summary("second", 2, 7))
    store.save_summary("t", Summary("", 0, 0))
    assert store.load_summary("s") == Summary("second", 2, 7)
    assert store.load_summary("t") == Summary("", 0, 0)
    assert store.load_summary("u") is None
    assert [m.content for m in store.load("s")] == ["hi"]  # a summary never touches messages


def test_delete_removes_messages_and_summary_and_frees_the_ids(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    keep = Message(role="user", content="kept", id="k1")
    store.append("gone", Message(role="user", content="bye", id="x1"))
    store.save_summary("gone", Summary("s", 0, 1))
    store.append("kept", keep)
    store.delete("gone")
    assert store.load("gone") == []
    assert store.load_summary("gone") is None
    assert store.sessions() == ["kept"]
    store.append("gone", Message(role="user", content="hello again", id="x1"))
    assert records(store.load("gone")) == [{"role": "user", "content": "hello again",
                                            "id": "x1"}]
    assert records(store.load("kept")) == records([keep])


@pytest.mark.parametrize("session", ["", "x" * 513, "lone \udc00", "nul \x00 inside", None, 7,
                                     b"bytes"])
def test_invalid_session_ids_are_rejected_by_every_call(store_backend: Backend,
                                                       session: object) -> None:
    store, _ = store_backend.new()
    message = Message(role="user", content="hi")
    calls = [lambda: store.append(session, message), lambda: store.load(session),
             lambda: store.delete(session), lambda: store.load_summary(session),
             lambda: store.save_summary(session, Summary("s", 0, 0))]
    for call in calls:
        with pytest.raises(StoreError):
            call()
    assert store.sessions() == []


def test_longest_session_id_is_accepted(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    session = "é" * 512
    store.append(session, Message(role="user", content="hi", id="1"))
    assert [m.id for m in store.load(session)] == ["1"]
    assert store.sessions() == [session]


def test_a_reopened_store_has_everything(durable_store_backend: Backend) -> None:
    store, spec = durable_store_backend.new()
    messages = conversation()
    for message in messages:
        store.append("s1", message)
    store.append("s2", Message(role="user", content="two", id="t"))
    store.save_summary("s1", Summary("sum", 1, 4))
    store.close()
    again = durable_store_backend.open(spec)
    assert records(again.load("s1")) == records(messages)
    assert records(again.load("s2")) == [{"role": "user", "content": "two", "id": "t"}]
    assert again.sessions() == ["s1", "s2"]
    assert again.load_summary("s1") == Summary("sum", 1, 4)
    with pytest.raises(StoreError):  # the duplicate check survives a reopen too
        again.append("s2", Message(role="assistant", content="dup", id="t"))


def test_a_memory_resumes_its_conversation_from_the_store(durable_store_backend: Backend) -> None:
    store, spec = durable_store_backend.new()
    memory = TokenBufferMemory(60, counter=COUNTER, store=store, session="chat")
    memory.add("system", "Be brief.")
    for turn in range(6):
        memory.add("user", f"question {turn} " + "words " * 10)
        memory.add("assistant", f"answer {turn}")
    history = memory.history()
    view = memory.messages()
    assert len(view) < len(history)  # trimmed view, full stored history
    resumed = TokenBufferMemory(60, counter=COUNTER, store=durable_store_backend.open(spec),
                                session="chat")
    assert records(resumed.history()) == records(history)
    assert records(resumed.messages()) == records(view)
    assert resumed.token_count() == memory.token_count()


def test_a_failed_store_write_leaves_the_memory_unchanged(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    memory = BufferMemory(counter=COUNTER, store=store, session="s")
    memory.add("user", "hello", id="one")
    with pytest.raises(StoreError):
        memory.add("user", "again", id="one")
    assert [m.id for m in memory.history()] == ["one"]
    assert [m.id for m in store.load("s")] == ["one"]


# -- optional extras -------------------------------------------------------------------------
def test_importing_stores_does_not_import_the_optional_drivers() -> None:
    code = ("import sys, contextwindow.stores as s\n"
            "assert 'redis' not in sys.modules and 'psycopg' not in sys.modules\n"
            "from contextwindow.stores import RedisStore, PostgresStore\n"
            "from contextwindow.stores.redis_store import RedisStore as R\n"
            "from contextwindow.stores.postgres_store import PostgresStore as P\n"
            "assert RedisStore is R and PostgresStore is P\n"
            "assert 'redis' not in sys.modules and 'psycopg' not in sys.modules\n"
            "try:\n    s.NoSuchStore\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "module 'contextwindow.stores' has no attribute 'NoSuchStore'\n"


@pytest.mark.parametrize(("cls_name", "module", "extra"), [
    ("RedisStore", "redis", "contextwindow[redis]"),
    ("PostgresStore", "psycopg", "contextwindow[postgres]"),
])
def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     cls_name: str, module: str,
                                                     extra: str) -> None:
    from contextwindow import stores

    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(StoreError, match=extra.replace("[", r"\[").replace("]", r"\]")) as info:
        getattr(stores, cls_name)("redis://localhost" if module == "redis" else "")
    assert isinstance(info.value, ContextWindowError)


def test_sqlite_urls_take_the_synchronous_option(tmp_path: Path) -> None:
    from contextwindow import stores

    for url, level in [(f"sqlite://{tmp_path}/a.db", 2),
                       (f"sqlite://{tmp_path}/a.db?synchronous=normal", 1),
                       (f"SQLite://{tmp_path}/a.db?synchronous=full", 2)]:
        store = stores.open(url)
        assert (store.path, store._run("PRAGMA synchronous")) == (tmp_path / "a.db", [(level,)])
        store.close()
    plain = stores.open(str(tmp_path / "b.db?synchronous=normal"))  # a path is taken whole
    assert plain.path.name == "b.db?synchronous=normal"
    plain.close()
    with pytest.raises(ConfigError, match="synchronous must be one of full, normal, not 'off'"):
        stores.open(f"sqlite://{tmp_path}/a.db?synchronous=off")
    with pytest.raises(StoreError, match="unknown SQLite URL option 'journal'"):
        stores.open(f"sqlite://{tmp_path}/a.db?journal=off")
    with pytest.raises(ConfigError, match="synchronous"):
        stores.SQLiteStore(tmp_path / "c.db", synchronous="FULL")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_servers_raise_store_errors() -> None:
    from contextwindow.stores import PostgresStore, RedisStore

    port = _closed_port()
    with pytest.raises(StoreError, match=f"redis://127.0.0.1:{port}/0"):
        RedisStore(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreError, match=f"postgresql://127.0.0.1:{port}/db"):
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{port}/db", connect_timeout=2)
    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{port}/db", connect_timeout=2)
    assert "secret" not in str(info.value)


# -- Redis specifics ---------------------------------------------------------------------
def _redis_client(store_backend: Backend):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(store_backend.server)


def test_redis_keys_are_all_under_the_prefix_with_ids_taken_literally(
        redis_backend: Backend) -> None:
    store, spec = redis_backend.new()
    prefix = spec["prefix"].encode()
    store.append("*", Message(role="user", content="star", id="1"))
    store.append("a:b", Message(role="user", content="colon", id="1"))
    store.save_summary("a:b", Summary("s", 0, 1))
    store.save_summary("msgs:a", Summary("t", 0, 0))
    with _redis_client(redis_backend) as client:
        keys = set(client.scan_iter(match=prefix + b"*"))
        assert keys == {prefix + key for key in [
            b"msgs:*", b"ids:*", b"msgs:a:b", b"ids:a:b", b"summary:a:b", b"summary:msgs:a",
            b"sessions", b"summarized", b"clock"]}
        assert client.lrange(prefix + b"msgs:a:b", 0, -1) == [
            b'{"role":"user","content":"colon","id":"1"}']
    assert store.sessions() == ["*", "a:b", "msgs:a"]
    assert store.load("a:*") == [] and store.load("a") == [] and store.load("?") == []
    store.delete("*")
    assert [m.content for m in store.load("a:b")] == ["colon"]


def test_redis_stores_with_different_prefixes_are_separate(redis_backend: Backend) -> None:
    one, _ = redis_backend.new()
    two, _ = redis_backend.new()
    one.append("s", Message(role="user", content="one", id="1"))
    two.append("s", Message(role="user", content="two", id="1"))
    assert [m.content for m in one.load("s")] == ["one"]
    assert [m.content for m in two.load("s")] == ["two"]
    one.delete("s")
    assert one.sessions() == [] and two.sessions() == ["s"]


def test_redis_test_server_is_configured_durable(redis_backend: Backend) -> None:
    from contextwindow.stores import RedisStore

    spec = redis_backend.new_spec()
    store = RedisStore(spec["url"], prefix=spec["prefix"], require_durable=True)
    store.close()
    with _redis_client(redis_backend) as client:
        config = client.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        client.config_set("appendfsync", "everysec")
        try:
            with pytest.raises(StoreError, match="appendfsync 'everysec'"):
                RedisStore(spec["url"], prefix=spec["prefix"], require_durable=True)
        finally:
            client.config_set("appendfsync", "always")
        assert client.config_get("appendfsync") == {"appendfsync": "always"}


def test_redis_retried_append_is_stored_once(redis_backend: Backend) -> None:
    store, _ = redis_backend.new()
    message = Message(role="user", content="once", id="r1")
    store._append("s", message, "token-1")
    store._append("s", message, "token-1")  # the same call again: a retry after a lost reply
    with pytest.raises(StoreError, match="already stored"):
        store._append("s", message, "token-2")  # another call with the same id
    assert records(store.load("s")) == records([message])


def test_redis_store_survives_its_connections_being_killed(redis_backend: Backend) -> None:
    store, _ = redis_backend.new()
    store.append("s", Message(role="user", content="before", id="1"))
    with _redis_client(redis_backend) as client:
        killed = client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    store.append("s", Message(role="user", content="after", id="2"))
    assert [m.id for m in store.load("s")] == ["1", "2"]


def test_redis_closed_store_raises(redis_backend: Backend) -> None:
    store, _ = redis_backend.new()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load("s")


# -- PostgreSQL specifics --------------------------------------------------------------------
def _pg(store_backend: Backend):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(store_backend.server, autocommit=True)


def test_postgres_tables_live_in_the_schema_and_commit_synchronously(
        postgres_backend: Backend) -> None:
    store, spec = postgres_backend.new()
    store.append("s", Message(role="user", content="hi", id="1"))
    assert store._conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert store._conn.execute("SHOW fsync").fetchone() == ("on",)
    assert store._conn.autocommit is True  # each append is its own committed transaction
    with _pg(postgres_backend) as conn:
        tables = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (spec["schema"],)).fetchall()
        rows = conn.execute(f'SELECT seq, session, id FROM "{spec["schema"]}".'
                            "contextwindow_messages").fetchall()
    assert tables == [
        ("contextwindow_messages", "seq", "bigint"),
        ("contextwindow_messages", "session", "text"),
        ("contextwindow_messages", "id", "text"),
        ("contextwindow_messages", "data", "text"),
        ("contextwindow_messages", "position", "bigint"),
        ("contextwindow_messages", "search_text", "text"),
        ("contextwindow_messages", "tsv", "tsvector"),
        ("contextwindow_summaries", "session", "text"),
        ("contextwindow_summaries", "seq", "bigint"),
        ("contextwindow_summaries", "data", "text"),
        ("contextwindow_terms", "session", "text"),
        ("contextwindow_terms", "lexeme", "text"),
        ("contextwindow_terms", "documents", "bigint"),
        ("contextwindow_vectors", "session", "text"),
        ("contextwindow_vectors", "model", "text"),
        ("contextwindow_vectors", "position", "bigint"),
        ("contextwindow_vectors", "data", "bytea"),
    ]
    assert rows == [(1, "s", "1")]


def test_postgres_injection_looking_session_is_just_an_id(postgres_backend: Backend) -> None:
    store, _ = postgres_backend.new()
    evil = "'; DROP TABLE contextwindow_messages; --"
    store.append("victim", Message(role="user", content="still here", id="v"))
    store.append(evil, Message(role="user", content="%s %(x)s $1", id="e"))
    store.save_summary(evil, Summary("'); DELETE FROM contextwindow_summaries; --", 0, 1))
    assert [m.content for m in store.load("victim")] == ["still here"]
    assert [m.content for m in store.load(evil)] == ["%s %(x)s $1"]
    assert store.load_summary(evil) == Summary("'); DELETE FROM contextwindow_summaries; --",
                                               0, 1)
    assert store.sessions() == ["victim", evil]


@pytest.mark.parametrize(("message_id", "why"), [("a\x00b", "NUL"), ("\ud800", "surrogate")])
def test_postgres_rejects_ids_text_cannot_hold(postgres_backend: Backend, message_id: str,
                                               why: str) -> None:
    store, _ = postgres_backend.new()
    with pytest.raises(StoreError, match=why):
        store.append("s", Message(role="user", content="x", id=message_id))
    assert store.load("s") == []


def test_postgres_schemas_are_separate(postgres_backend: Backend) -> None:
    one, _ = postgres_backend.new()
    two, _ = postgres_backend.new()
    one.append("s", Message(role="user", content="one", id="1"))
    two.append("s", Message(role="user", content="two", id="1"))
    assert [m.content for m in one.load("s")] == ["one"]
    assert [m.content for m in two.load("s")] == ["two"]


def test_postgres_store_reconnects_after_its_connection_is_killed(
        postgres_backend: Backend) -> None:
    store, _ = postgres_backend.new()
    store.append("s", Message(role="user", content="before", id="1"))
    pid = store._conn.info.backend_pid
    with _pg(postgres_backend) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    store.append("s", Message(role="user", content="after", id="2"))
    assert store._conn.info.backend_pid != pid
    assert [m.id for m in store.load("s")] == ["1", "2"]
    pid = store._conn.info.backend_pid
    with _pg(postgres_backend) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert [m.id for m in store.load("s")] == ["1", "2"]


def test_postgres_closed_store_raises(postgres_backend: Backend) -> None:
    store, _ = postgres_backend.new()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load("s")
