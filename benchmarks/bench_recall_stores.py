"""What the recall index costs each store: add and search latency at 1k / 10k / 100k messages.

    .venv/bin/python benchmarks/bench_recall_stores.py [--sizes 1000 10000 100000] [--rounds 200]

Prints one JSON object and writes docs/results/bench_recall_stores.json. Every store runs with
its durable settings (as in bench_stores.py; Redis and PostgreSQL come from
CONTEXTWINDOW_TEST_REDIS_URL / CONTEXTWINDOW_TEST_POSTGRES_DSN or are started here).

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

from contextwindow.messages import Message
from contextwindow.retrieval.text import query_terms
from contextwindow.stores.base import encode_message

KINDS = ("inmemory", "sqlite", "redis", "postgres")
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


class Unindexed:
    """The anchor for ``add``: the same durable INSERT without the recall index, as the
    stores wrote before it (SQLite: a file with the same pragmas; PostgreSQL: a table without
    the index columns, one autocommit INSERT)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind = spec["kind"]
        if self.kind == "sqlite":
            self.conn: Any = sqlite3.connect(spec["path"] + ".plain", isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
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
    for kind, spec in specs.items():
        log(f"{size} messages: filling {kind}...")
        stores[kind] = open_store(spec)
        out[kind] = {"fill_s": round(fill(stores[kind], stored), 2)}
    if "redis" in stores:  # a new store object has no index: its first search builds it
        stores["redis"].close()
        stores["redis"] = open_store(specs["redis"])
        before, start = rss_mb(), time.perf_counter()
        stores["redis"].search(SESSION, asked[0])
        out["redis"].update(rebuild_s=round(time.perf_counter() - start, 3),
                            index_rss_mb=round(rss_mb() - before, 1))
    contenders = {}
    anchors: list[Unindexed] = []
    for kind in ("sqlite", "postgres"):
        if kind in specs:
            anchor, rest = Unindexed(specs[kind]), iter(extra)
            anchor.fill(stored)
            contenders[f"{kind}:add_unindexed"] = lambda a=anchor, t=rest: a.append(next(t))
            anchors.append(anchor)
    for kind, store in stores.items():
        adds, searches = iter(extra), iter(asked)
        contenders[f"{kind}:add"] = lambda s=store, a=adds: s.append(
            SESSION, Message(role="user", content=next(a)))
        contenders[f"{kind}:search"] = lambda s=store, q=searches: s.search(SESSION, next(q))
    log(f"{size} messages: {rounds} rounds of add + search on {', '.join(stores)}...")
    times = interleaved(contenders, rounds, warmup=warmup)
    for anchor in anchors:
        anchor.conn.close()
    for kind, store in stores.items():
        add, search = times[f"{kind}:add"], times[f"{kind}:search"]
        out[kind].update(add=latency(add), search=latency(search),
                         add_plus_search=latency([a + s for a, s in zip(add, search)]))
        if len(store.load(SESSION)) != size + rounds + warmup:
            raise RuntimeError(f"{kind} lost messages")
        store.close()
        if f"{kind}:add_unindexed" in times:
            out[kind]["add_without_index"] = latency(times[f"{kind}:add_unindexed"])
    return out


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
    texts = passages(max(args.sizes) + args.rounds + args.warmup)
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
                specs[kind] = {"kind": kind, "path": os.path.join(tmp, f"{name}.db"),
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
