"""What the recall index costs each store: add and search latency at 1k / 10k / 100k messages,
and a RecallMemory's add + view on each.

    .venv/bin/python benchmarks/bench_recall_stores.py [--sizes 1000 10000 100000] [--rounds 200]

Prints one JSON object and writes docs/results/bench_recall_stores.json. Every store runs with
its durable settings (as in bench_stores.py; Redis and PostgreSQL come from
CONTEXTWINDOW_TEST_REDIS_URL / CONTEXTWINDOW_TEST_POSTGRES_DSN or are started here), and
SQLite also with ``synchronous="normal"`` (``sqlite_normal``: no fsync per commit).

For each size N, one session in a fresh store of each kind is filled with N messages (~40-word
passages of the five Austen novels in ../shared/corpora), then, over ``rounds`` interleaved
rounds (the stores' order alternating), each store appends one more message (``add``: the
message and its index entry, one durable transaction) and answers one search (``search``:
three words of a random stored message, top 20). Reported: median and p95 of each, and of
add + search in the same round. The RedisStore keeps its index in the process, derived from
the message list: ``rebuild_s`` is its first search after opening (reading and indexing all N
messages) and ``index_rss_mb`` the process memory that took; later searches catch up with the
list's length first. SQLite's FTS5 ranks with the file's statistics (here: one session), the
in-memory and Redis indexes with the session's, PostgreSQL with ts_rank (no corpus
statistics).

Then the path an application takes (``memory``): a ``RecallMemory(max_tokens=2048,
ranker="lexical")`` on the same session (N + the rounds above), over ``rounds`` more
interleaved rounds, adds one user message (a passage not stored yet) and builds its view
(``messages()``: the window, and the recall block ranked for that message, two searches with
``feedback=1``). Reported: median and p95 of the add, the view, and both.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    add_out_argument,
    emit,
    interleaved,
    log,
    percentile,
    provenance,
    start_services,
    stop_services,
)
from bench_stores import cleanup, open_store, server_versions

from contextwindow.memory import RecallMemory
from contextwindow.messages import Message
from contextwindow.retrieval.text import query_terms
from contextwindow.stores import SQLiteStore
from contextwindow.stores.base import encode_message

KINDS = ("inmemory", "sqlite", "sqlite_normal", "redis", "postgres")
MEMORY_TOKENS = 2048
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
SESSION = "recall-bench"
WORDS_PER_MESSAGE = 40
FILL_BATCH = 1000


def passages(count: int) -> list[str]:
    """``count`` passages of the novels, ~40 words each; past the novels' end they start
    again with other boundaries (each pass 3 words longer), so no two passages are equal."""
    words = [word for path in sorted(CORPORA.glob("austen_*.txt"))
             for word in path.read_text(encoding="utf-8").split()]
    out: list[str] = []
    length = WORDS_PER_MESSAGE
    while len(out) < count:
        out += [" ".join(words[i:i + length]) for i in range(0, len(words) - length, length)]
        length += 3
    return out[:count]


def latency(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times) * 1000, 3),
            "p95_ms": round(percentile(times, 95) * 1000, 3)}


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(store: Any, texts: list[str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), FILL_BATCH):
        store.append_many(SESSION, [Message(role="user" if (i + k) % 2 == 0 else "assistant",
                                            content=text)
                                    for k, text in enumerate(texts[i:i + FILL_BATCH])])
    return time.perf_counter() - start


def queries(texts: list[str], count: int, rng: random.Random) -> list[str]:
    """Questions made of three words of a random stored message."""
    out = []
    while len(out) < count:
        terms = query_terms(rng.choice(texts))
        if len(terms) >= 3:
            out.append("What about " + " ".join(rng.sample(terms, 3)) + "?")
    return out


def open_spec(spec: dict[str, Any]) -> Any:
    """bench_stores' store for ``spec``, SQLite with its ``synchronous`` option."""
    if spec["kind"] == "sqlite":
        return SQLiteStore(spec["path"], synchronous=spec["synchronous"])
    return open_store(spec)


class Unindexed:
    """The anchor for ``add``: the same durable INSERT without the recall index, as the
    stores wrote before it (SQLite: a file with the same pragmas; PostgreSQL: a table without
    the index columns, one autocommit INSERT)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind = spec["kind"]
        if self.kind == "sqlite":
            self.conn: Any = sqlite3.connect(spec["path"] + ".plain", isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={spec['synchronous'].upper()}")
            self.conn.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                              "session TEXT, id TEXT, data TEXT, UNIQUE (session, id))")
            self.sql = "INSERT INTO messages (session, id, data) VALUES (?, ?, ?)"
        else:
            import psycopg

            self.conn = psycopg.connect(spec["dsn"], autocommit=True)
            table = f'"{spec["schema"]}".plain'
            self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{spec["schema"]}"')
            self.conn.execute(f"CREATE TABLE {table} (seq bigserial PRIMARY KEY, session text, "
                              "id text, data text, UNIQUE (session, id))")
            self.sql = f"INSERT INTO {table} (session, id, data) VALUES (%s, %s, %s)"

    def fill(self, texts: list[str]) -> None:
        rows = [(SESSION, str(i), encode_message(Message(role="user", content=text)))
                for i, text in enumerate(texts)]
        if self.kind == "sqlite":
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(self.sql, rows)
        else:
            with self.conn.transaction():
                self.conn.cursor().executemany(self.sql, rows)

    def append(self, text: str) -> None:
        message = Message(role="user", content=text)
        self.conn.execute(self.sql, (SESSION, message.id, encode_message(message)))


def measure_size(size: int, specs: dict[str, dict[str, Any]], texts: list[str],
                 rounds: int, warmup: int) -> dict[str, Any]:
    stored, extra = texts[:size], texts[size:]
    rng = random.Random(size)
    asked = queries(stored, rounds + warmup, rng)
    stores: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        log(f"{size} messages: filling {name}...")
        stores[name] = open_spec(spec)
        out[name] = {"fill_s": round(fill(stores[name], stored), 2)}
    if "redis" in stores:  # a new store object has no index: its first search builds it
        stores["redis"].close()
        stores["redis"] = open_spec(specs["redis"])
        before, start = rss_mb(), time.perf_counter()
        stores["redis"].search(SESSION, asked[0])
        out["redis"].update(rebuild_s=round(time.perf_counter() - start, 3),
                            index_rss_mb=round(rss_mb() - before, 1))
    contenders = {}
    anchors: list[Unindexed] = []
    for name, spec in specs.items():
        if spec["kind"] in ("sqlite", "postgres"):
            anchor, rest = Unindexed(spec), iter(extra)
            anchor.fill(stored)
            contenders[f"{name}:add_unindexed"] = lambda a=anchor, t=rest: a.append(next(t))
            anchors.append(anchor)
    for name, store in stores.items():
        adds, searches = iter(extra), iter(asked)
        contenders[f"{name}:add"] = lambda s=store, a=adds: s.append(
            SESSION, Message(role="user", content=next(a)))
        contenders[f"{name}:search"] = lambda s=store, q=searches: s.search(SESSION, next(q))
    log(f"{size} messages: {rounds} rounds of add + search on {', '.join(stores)}...")
    times = interleaved(contenders, rounds, warmup=warmup)
    for anchor in anchors:
        anchor.conn.close()
    for name in stores:
        add, search = times[f"{name}:add"], times[f"{name}:search"]
        out[name].update(add=latency(add), search=latency(search),
                         add_plus_search=latency([a + s for a, s in zip(add, search)]))
        if f"{name}:add_unindexed" in times:
            out[name]["add_without_index"] = latency(times[f"{name}:add_unindexed"])
    for name, timed in measure_memories(stores, extra[rounds + warmup:], rounds,
                                        warmup).items():
        out[name]["memory"] = timed
    for name, store in stores.items():
        if len(store.load(SESSION)) != size + 2 * (rounds + warmup):
            raise RuntimeError(f"{name} lost messages")
        store.close()
    return out


def measure_memories(stores: dict[str, Any], texts: list[str], rounds: int,
                     warmup: int) -> dict[str, dict[str, Any]]:
    """A RecallMemory on each store's session: add one user message, build the view."""
    parts: dict[str, tuple[list[float], list[float], list[bool]]] = {}
    contenders = {}
    for name, store in stores.items():
        log(f"opening a RecallMemory on {name}...")
        memory = RecallMemory(MEMORY_TOKENS, store=store, session=SESSION, ranker="lexical")
        parts[name] = adds, views, recalled = [], [], []
        questions = iter(texts)

        def step(memory: RecallMemory = memory, adds: list[float] = adds,
                 views: list[float] = views, recalled: list[bool] = recalled,
                 rest: Any = questions) -> None:
            start = time.perf_counter()
            memory.add("user", next(rest))
            added = time.perf_counter()
            view = memory.messages()
            views.append(time.perf_counter() - added)
            adds.append(added - start)
            recalled.append(view[-2].id == "recalled")

        contenders[name] = step
    log(f"{rounds} rounds of RecallMemory add + view on {', '.join(stores)}...")
    times = interleaved(contenders, rounds, warmup=warmup)
    return {name: {"add": latency(adds[warmup:]), "view": latency(views[warmup:]),
                   "add_plus_view": latency(times[name]),
                   "views_with_recall": round(statistics.mean(recalled[warmup:]), 3)}
            for name, (adds, views, recalled) in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    add_out_argument(parser, "bench_recall_stores")
    args = parser.parse_args()
    env, state = start_services()
    urls = {kind: env.get(f"CONTEXTWINDOW_TEST_{kind.upper()}_{suffix}")
            for kind, suffix in (("redis", "URL"), ("postgres", "DSN"))}
    texts = passages(max(args.sizes) + 3 * (args.rounds + args.warmup))
    tmp = tempfile.mkdtemp(prefix="contextwindow-bench-recall.")
    result: dict[str, Any] = {
        "benchmark": "recall_stores", **provenance(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    **server_versions({k: u for k, u in urls.items() if u})},
        "rounds": args.rounds, "warmup": args.warmup, "search_limit": 20,
        "message_chars_median": statistics.median(len(t) for t in texts), "sizes": {}}
    try:
        for size in args.sizes:
            specs = {}
            for kind in args.kinds:
                if kind in urls and not urls[kind]:
                    log(f"{kind}: no server, left out")
                    continue
                name = uuid.uuid4().hex[:10]
                store, _, synchronous = kind.partition("_")
                specs[kind] = {"kind": store, "path": os.path.join(tmp, f"{name}.db"),
                               "synchronous": synchronous or "full",
                               "url": urls["redis"], "prefix": f"cwbench-{name}:",
                               "dsn": urls["postgres"], "schema": f"cwbench_{name}"}
            try:
                result["sizes"][str(size)] = measure_size(size, specs, texts, args.rounds,
                                                          args.warmup)
            finally:
                for spec in specs.values():
                    cleanup(spec)
    finally:
        for path in Path(tmp).glob("*"):
            path.unlink()
        os.rmdir(tmp)
        stop_services(state)
    emit(result, args.out)


if __name__ == "__main__":
    main()
