"""Every store keeps each acknowledged message through crashes, concurrent writers and hostile
input. The durable stores (SQLite, Redis, PostgreSQL) are killed with SIGKILL mid-write; the
InMemoryStore, which dies with its process, is checked under threads and bad input only."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contextwindow.errors import ContextWindowError, InvalidMessageError, StoreError
from contextwindow.memory import BufferMemory
from contextwindow.messages import ROLES, Message, Summary
from contextwindow.stores.base import MAX_SESSION_LENGTH
from contextwindow.tokens import TokenCounter

# The fixtures (store_backend, durable_store_backend, ...) come from tests/store_fixtures.py.
pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import (
    Backend,
    Writers,
    message_for,
    postgres_frequencies,
    records,
    run_threads,
)

KILLS = 20
WRITERS = 8
PER_WRITER = 25
DUPS = 10


def _check_opens_cleanly(store_backend: Backend, spec: dict[str, Any], store: Any,
                         session: str) -> None:
    """Beyond load(): the store_backend's own consistency checks after a crash."""
    if store_backend.kind == "sqlite":
        assert store._run("PRAGMA integrity_check") == [("ok",)]
        # the document frequencies moved with the index rows: one more under "" per row
        assert store._run("SELECT documents FROM messages_terms WHERE term = ''") == \
            store._run("SELECT COUNT(*) FROM messages_fts")
    elif store_backend.kind == "postgres":  # the document frequencies moved with the rows
        stored, counted = postgres_frequencies(store)
        assert stored == counted and stored[(session, "")] == len(store.load(session))
    elif store_backend.kind == "redis":  # the message list and the id index moved together
        prefix = spec["prefix"].encode()
        client = store._client
        assert client.llen(prefix + b"msgs:" + session.encode()) == client.hlen(
            prefix + b"ids:" + session.encode())
    memory = BufferMemory(counter=TokenCounter.approximate(), store=store, session=session)
    assert records(memory.history()) == records(store.load(session))
    _check_found_by_search(store, session)


def _check_found_by_search(store: Any, session: str) -> None:
    """The recall index survived the crash with the messages: each run's tag (a word of each
    of its messages' text, ``message_for``) finds exactly that run's stored messages, the
    acknowledged ones and any committed in flight."""
    stored = store.load(session)
    runs: dict[str, set[int]] = {}
    for position, message in enumerate(stored):
        runs.setdefault(message.id.split("-")[0], set()).add(position)
    for tag, positions in runs.items():
        assert {hit.index for hit in store.search(session, tag, limit=len(stored))} == positions


# -- (a) crashes -------------------------------------------------------------------------
def test_the_durability_settings_every_acknowledged_append_relies_on(
        durable_store_backend: Backend) -> None:
    """SIGKILL cannot see a missing fsync (the kernel still has the page), so the settings that
    make an append survive a power cut are pinned here: a weakened one fails this test."""
    store, spec = durable_store_backend.new()
    store.append("s", message_for("durable", 0))
    kind = durable_store_backend.kind
    if kind == "sqlite":
        # the store's own connection: write-ahead log, fsync at every commit (FULL = 2)
        assert store._run("PRAGMA journal_mode") == [("wal",)]
        assert store._run("PRAGMA synchronous") == [(2,)]
        with sqlite3.connect(spec["path"]) as other:  # WAL is a property of the file
            assert other.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        from contextwindow.stores import SQLiteStore

        normal = SQLiteStore(spec["path"], synchronous="normal")  # the option: NORMAL = 1
        assert normal._run("PRAGMA synchronous") == [(1,)]
        normal.close()
    elif kind == "redis":
        from contextwindow.stores import RedisStore

        config = store._client.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        RedisStore(spec["url"], prefix=spec["prefix"], require_durable=True).close()
    else:
        settings = {name: store._conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("synchronous_commit", "fsync", "full_page_writes")}
        assert settings == {"synchronous_commit": "on", "fsync": "on", "full_page_writes": "on"}
        assert store._conn.autocommit is True  # each append commits before it returns


def test_every_acknowledged_append_survives_sigkill(durable_store_backend: Backend,
                                                    store_writers: Writers,
                                                    tmp_path: Path) -> None:
    """A writer process adds messages in a loop and records each id once ``add`` returned; it
    is killed with SIGKILL at a random moment, 20 times. After each kill the store opens
    cleanly and holds exactly the earlier runs' messages, then this run's acknowledged ones,
    plus at most the one in flight: in order, no duplicates, every field intact, and every one
    of them found by ``search``."""
    _kill_writers(durable_store_backend, store_writers, tmp_path,
                  durable_store_backend.new_spec())


def test_sqlite_synchronous_normal_survives_sigkill(store_writers: Writers,
                                                    tmp_path: Path) -> None:
    """``synchronous="normal"`` leaves the fsync to checkpoints: what a killed process has
    committed is in the OS's page cache, so the same kills lose nothing acknowledged (an OS
    crash or power cut could lose the last commits, which no test here can simulate)."""
    backend = Backend("sqlite", None, tmp_path)
    spec = backend.new_spec()
    spec["synchronous"] = "normal"
    try:
        _kill_writers(backend, store_writers, tmp_path, spec)
    finally:
        backend.cleanup()


def _kill_writers(store_backend: Backend, store_writers: Writers, tmp_path: Path,
                  spec: dict[str, Any]) -> None:
    """The SIGKILL runs of the two tests above, on the store ``spec`` opens."""
    store_backend.open(spec).close()  # create the tables / file once
    session = "crash-session"
    rng = random.Random(20240607)
    expected: list[str] = []
    acked_total = 0
    for run in range(KILLS):
        tag, acks = f"r{run}", tmp_path / f"acks-{run}.txt"
        acks.touch()
        pid = store_writers.crash_writer(spec, session, tag, acks)
        try:
            if run % 2 == 0:  # half the kills land after at least one acknowledged add
                while not acks.read_text(encoding="utf-8").endswith("\n"):
                    time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.12))
        finally:
            os.kill(pid, signal.SIGKILL)
            # It died of the kill, mid-loop, not of an error.
            assert store_writers.wait(pid) == (signal.SIGKILL, None)
        acked = acks.read_text(encoding="utf-8").split("\n")[:-1]  # a cut line was not acked
        assert acked == [f"{tag}-{i}" for i in range(len(acked))]
        assert len(acked) >= (1 if run % 2 == 0 else 0)
        acked_total += len(acked)

        store = store_backend.open(spec)
        stored = store.load(session)
        ids = [m.id for m in stored]
        assert ids[:len(expected)] == expected
        new = ids[len(expected):]
        assert new in (acked, [*acked, f"{tag}-{len(acked)}"])
        assert records(stored[len(expected):]) == records(
            [message_for(tag, i) for i in range(len(new))])
        assert len(set(ids)) == len(ids)
        _check_opens_cleanly(store_backend, spec, store, session)
        store.close()
        expected = ids
    assert acked_total >= KILLS // 2


# -- (b) concurrency ----------------------------------------------------------------------
def _check_concurrent_outcome(store: Any, won: list[list[int]]) -> None:
    if type(store).__name__ == "PostgresStore":  # concurrent writers counted every message
        stored, counted = postgres_frequencies(store)
        assert stored == counted and stored[("shared", "")] == WRITERS * PER_WRITER
    shared = store.load("shared")
    assert len(shared) == WRITERS * PER_WRITER
    assert len({m.id for m in shared}) == len(shared)
    for k in range(WRITERS):
        own = [message_for(f"w{k}", i) for i in range(PER_WRITER)]
        mine = [m for m in shared if m.id.startswith(f"w{k}-")]
        assert records(mine) == records(own)  # each writer's order kept, nothing corrupted
        assert records(store.load(f"own-{k}")) == records(own)
        # The recall index agrees with load(): a writer's tag finds its messages' positions.
        positions = {p for p, m in enumerate(shared) if m.id.startswith(f"w{k}-")}
        assert {hit.index for hit in store.search("shared", f"w{k}", limit=len(shared))} == (
            positions)
    # Every contested id went to exactly one writer, and the stored message is the winner's.
    assert sorted(i for ids in won for i in ids) == list(range(DUPS))
    winner = {i: k for k, ids in enumerate(won) for i in ids}
    dups = store.load("dups")
    assert sorted(m.id for m in dups) == sorted(f"dup-{i}" for i in range(DUPS))
    assert {m.id: m.content for m in dups} == {
        f"dup-{i}": f"won by {winner[i]}" for i in range(DUPS)}
    sessions = store.sessions()
    assert sessions[0] == "shared"  # every writer wrote it before anything else
    assert sorted(sessions) == sorted(["shared", "dups", *[f"own-{k}" for k in range(WRITERS)]])


def test_eight_writer_processes_lose_and_corrupt_nothing(durable_store_backend: Backend,
                                                         store_writers: Writers,
                                                         tmp_path: Path) -> None:
    spec = durable_store_backend.new_spec()
    store = durable_store_backend.open(spec)
    pids = store_writers.concurrent(spec, WRITERS, PER_WRITER, DUPS, tmp_path)
    assert [store_writers.wait(pid) for pid in pids] == [(None, 0)] * WRITERS
    won = [json.loads((tmp_path / f"{k}.json").read_text()) for k in range(WRITERS)]
    _check_concurrent_outcome(store, won)
    _check_concurrent_outcome(durable_store_backend.open(spec), won)  # and so does a fresh reader


def test_eight_threads_sharing_one_store_lose_and_corrupt_nothing(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    won = run_threads(store, WRITERS, PER_WRITER, DUPS)
    _check_concurrent_outcome(store, won)


# -- (c) hostile input -------------------------------------------------------------------
ODD_SESSIONS = [
    "'; DROP TABLE messages; --", "'; DROP TABLE contextwindow_messages; --", "*", "a:b",
    "a:*", "a", "msgs:a", "ids:a", "summary:a", "sessions", "clock", "contextwindow:sessions",
    "?", "[ab]", "{x}", "%s", "%(x)s", "$1", "\\", " ", "\n", "é", "🎉", "x" * MAX_SESSION_LENGTH,
    "x" * (MAX_SESSION_LENGTH + 1), "", "a\x00b", "\ud800", "a\udfffb",
]
SPECIAL_CHARS = ["\x00", "\ud800", "\udfff", "\u2028", "'", '"', "\\", "%", "*", ":", "\r",
                 "🎉", "\ufeff", "\U0010ffff"]
ODD_ROLES = ["User", "", "robot", "system\x00", "function", " user"]

any_text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS)),
                   max_size=60)
session_ids = st.one_of(st.sampled_from(ODD_SESSIONS), any_text)


@st.composite
def raw_messages(draw: Any) -> dict[str, Any]:
    """Message fields, mostly valid ones (so stores see them), sometimes ones Message refuses."""
    odd = draw(st.integers(0, 4)) == 0
    role = draw(st.sampled_from([*ROLES, *ODD_ROLES] if odd else ROLES))
    fields: dict[str, Any] = {"role": role, "content": draw(
        st.one_of(st.none(), any_text) if odd else st.one_of(any_text, st.text(max_size=3000)))}
    if draw(st.booleans()):
        fields["name"] = draw(any_text)
    if draw(st.integers(0, 3)):
        fields["id"] = draw(st.one_of(any_text, st.sampled_from(
            ["same", "same", "dup", "\ud800", "a\x00b", "*", "'; --"])))
    if role == "tool" or (odd and draw(st.booleans())):
        fields["tool_call_id"] = draw(st.sampled_from(["call_1", "\ud800", "x" * 1000]))
    return fields


operations = st.lists(
    st.tuples(st.integers(0, 3), st.one_of(raw_messages(), raw_messages(), st.builds(
        Summary, text=any_text, start=st.integers(0, 10**6), end=st.integers(0, 10**6)))),
    max_size=16)


def valid_session(session: str) -> bool:
    return (0 < len(session) <= MAX_SESSION_LENGTH and "\x00" not in session
            and not any(0xD800 <= ord(c) <= 0xDFFF for c in session))


def storable_id(kind: str, message_id: str) -> bool:
    """Which message ids a store_backend can keep: SQL text columns take valid Unicode only."""
    unicode_ok = not any(0xD800 <= ord(c) <= 0xDFFF for c in message_id)
    if kind == "sqlite":
        return unicode_ok
    if kind == "postgres":
        return unicode_ok and "\x00" not in message_id
    return True


def test_hostile_input_is_kept_exactly_or_rejected_clearly(store_backend: Backend) -> None:
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(sessions=st.lists(session_ids, min_size=1, max_size=4, unique=True), ops=operations)
    def check(sessions: list[str], ops: list[tuple[int, Any]]) -> None:
        store, spec = store_backend.new()
        try:
            run_hostile(store_backend.kind, store, sessions, ops)
        finally:
            store_backend.drop(spec)

    check()


def run_hostile(kind: str, store: Any, sessions: list[str], ops: list[tuple[int, Any]]) -> None:
    kept: dict[str, list[Message]] = {s: [] for s in sessions}
    summaries: dict[str, Summary] = {}
    first_message: list[str] = []
    first_summary: list[str] = []
    for index, op in ops:
        session = sessions[index % len(sessions)]
        if isinstance(op, Summary):
            if not valid_session(session):
                with pytest.raises(StoreError):
                    store.save_summary(session, op)
                continue
            store.save_summary(session, op)
            summaries[session] = op
            if session not in first_summary:
                first_summary.append(session)
            continue
        # Message's own rules: odd roles, missing content, a misplaced tool_call_id, an empty
        # id are refused before any store sees them.
        constructible = (op["role"] in ROLES and op["content"] is not None
                         and (op["role"] == "tool") == ("tool_call_id" in op)
                         and (op["role"] != "function" or bool(op.get("name")))
                         and op.get("id") != "")
        if not constructible:
            event("message refused at construction")
            with pytest.raises(InvalidMessageError):
                Message(**op)
            continue
        message = Message(**op)
        ok_session = valid_session(session)
        ok_id = storable_id(kind, message.id)
        fresh = message.id not in {m.id for m in kept.get(session, [])}
        event(f"append: session ok={ok_session}, id ok={ok_id}, fresh id={fresh}")
        if ok_session and ok_id and fresh:
            store.append(session, message)
            kept[session].append(message)
            if session not in first_message:
                first_message.append(session)
        else:
            with pytest.raises(StoreError) as info:
                store.append(session, message)
            assert isinstance(info.value, ContextWindowError)
    for session in sessions:
        if not valid_session(session):
            with pytest.raises(StoreError):
                store.load(session)
            continue
        assert records(store.load(session)) == records(kept[session])
        assert store.load_summary(session) == summaries.get(session)
    # No session id reads another: neighbours and patterns of the written ids hold nothing.
    for probe in ["*", "a:*", "?", "%", "x", *[s + suffix for s in sessions
                                                 for suffix in ("*", ":", " ")]]:
        if probe not in sessions and valid_session(probe):
            assert store.load(probe) == []
            assert store.load_summary(probe) is None
    expected = [*first_message, *[s for s in first_summary if s not in first_message]]
    assert store.sessions() == expected


def test_huge_empty_and_odd_messages_round_trip(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    huge = "a" * 2_000_000 + "é\ud800\x00" * 100_000 + "🎉" * 100_000
    messages = [
        Message(role="user", content=huge, id="huge"),
        Message(role="assistant", content="", id="empty"),
        Message(role="user", content="\x00", name="\ud800\x00", id="nul"),
        Message(role="user", content="x", id="i" * 10_000),
    ]
    for message in messages:
        store.append("big", message)
    loaded = store.load("big")
    assert [len(m.content or "") for m in loaded] == [2_400_000, 0, 1, 1]
    assert records(loaded) == records(messages)
    store.save_summary("big", Summary(huge, 0, 4))
    assert store.load_summary("big") == Summary(huge, 0, 4)


def test_sessions_with_look_alike_ids_never_read_each_other(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    sessions = [s for s in ODD_SESSIONS if valid_session(s)]
    for n, session in enumerate(sessions):
        store.append(session, Message(role="user", content=f"for {session!r}", id=f"id-{n}"))
        store.append(session, Message(role="assistant", content=str(n), id="shared-id"))
    for n, session in enumerate(sessions):
        assert records(store.load(session)) == [
            {"role": "user", "content": f"for {session!r}", "id": f"id-{n}"},
            {"role": "assistant", "content": str(n), "id": "shared-id"}]
    assert store.sessions() == sessions
    for session in sessions[::2]:
        store.delete(session)
    assert store.sessions() == sessions[1::2]
    for n, session in enumerate(sessions):
        assert len(store.load(session)) == (2 if n % 2 else 0)
