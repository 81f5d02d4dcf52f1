"""Store throughput and read latency: appends/s and median ``load()`` time, 1 and 8 writers.

    .venv/bin/python benchmarks/bench_stores.py [--seconds 3]

Prints one JSON object. Every store runs with its durable settings: SQLite WAL +
synchronous=FULL, Redis appendonly + appendfsync always, PostgreSQL synchronous_commit on. Redis
and PostgreSQL come from CONTEXTWINDOW_TEST_REDIS_URL / CONTEXTWINDOW_TEST_POSTGRES_DSN, or are
started (and stopped) here by scripts/test-services.sh.

For each store and writer count W, W writers (processes; threads for the in-memory store, which
lives in one process) each append ~200-character messages to their own session for the given
time, while this process loads a 100-message session every 20 ms. ``appends_per_s`` is the
writers' total over the window; ``load_ms_median`` the median of those loads under that load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from _common import start_services, stop_services

KINDS = ("inmemory", "sqlite", "redis", "postgres")
WRITER_COUNTS = (1, 8)
LOAD_MESSAGES = 100
LOAD_EVERY = 0.02
CONTENT = ("The quick brown fox jumps over the lazy dog while the assistant keeps the whole "
           "conversation inside its token budget, message after message, without losing any. ")


def message(i: int) -> Any:
    from contextwindow.messages import Message

    return Message(role="user" if i % 2 == 0 else "assistant", content=f"{i}: {CONTENT}")


def open_store(spec: dict[str, Any]) -> Any:
    kind = spec["kind"]
    if kind == "inmemory":
        from contextwindow.stores import InMemoryStore

        return InMemoryStore()
    if kind == "sqlite":
        from contextwindow.stores import SQLiteStore

        return SQLiteStore(spec["path"])
    if kind == "redis":
        from contextwindow.stores import RedisStore

        return RedisStore(spec["url"], prefix=spec["prefix"])
    from contextwindow.stores import PostgresStore

    return PostgresStore(spec["dsn"], schema=spec["schema"])


def append_for(store: Any, session: str, seconds: float) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        store.append(session, message(count))
        count += 1
    return count, time.perf_counter() - start


def writer_main(spec_json: str, session: str, seconds: float) -> None:
    """A writer process: open, say ready, wait for go, append for ``seconds``, report."""
    store = open_store(json.loads(spec_json))
    print("ready", flush=True)
    sys.stdin.readline()
    count, elapsed = append_for(store, session, seconds)
    print(json.dumps({"count": count, "elapsed": elapsed}), flush=True)
    store.close()


def sample_loads(store: Any, session: str, stop: threading.Event) -> list[float]:
    times = []
    while not stop.is_set():
        start = time.perf_counter()
        loaded = store.load(session)
        times.append(time.perf_counter() - start)
        assert len(loaded) == LOAD_MESSAGES
        stop.wait(LOAD_EVERY)
    return times


def measure(spec: dict[str, Any], writers: int, seconds: float) -> dict[str, Any]:
    store = open_store(spec)
    for i in range(LOAD_MESSAGES):
        store.append("reader", message(i))
    stop = threading.Event()
    counts: dict[int, tuple[int, float]] = {}
    if spec["kind"] == "inmemory":  # one process: the writers are threads on the same store
        barrier = threading.Barrier(writers + 1)

        def work(k: int) -> None:
            barrier.wait()
            counts[k] = append_for(store, f"writer-{k}", seconds)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        loads = sample_loads(store, "reader", _stop_after(stop, seconds))
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    else:
        procs = [subprocess.Popen([sys.executable, __file__, "--writer", json.dumps(spec),
                                   f"writer-{k}", str(seconds)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for k in range(writers)]
        for proc in procs:
            if proc.stdout.readline() != "ready\n":  # type: ignore[union-attr]
                raise RuntimeError(f"a {spec['kind']} writer failed to start")
        start = time.perf_counter()
        for proc in procs:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        loads = sample_loads(store, "reader", _stop_after(stop, seconds))
        for k, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"a {spec['kind']} writer failed ({proc.returncode})")
            report = json.loads(out)
            counts[k] = (report["count"], report["elapsed"])
        wall = time.perf_counter() - start
    for k, (count, _) in counts.items():  # every acknowledged append is there
        if len(store.load(f"writer-{k}")) != count:
            raise RuntimeError(f"{spec['kind']}: writer {k} appended {count} messages, "
                               f"the store has {len(store.load(f'writer-{k}'))}")
    store.close()
    total = sum(count for count, _ in counts.values())
    window = max(elapsed for _, elapsed in counts.values())
    return {"appends_per_s": round(total / window, 1), "appends": total,
            "load_ms_median": round(statistics.median(loads) * 1000, 3),
            "loads": len(loads), "wall_s": round(wall, 2)}


def _stop_after(stop: threading.Event, seconds: float) -> threading.Event:
    threading.Timer(seconds, stop.set).start()
    return stop


def cleanup(spec: dict[str, Any]) -> None:
    if spec["kind"] == "redis":
        import redis

        with redis.Redis.from_url(spec["url"]) as client:
            keys = list(client.scan_iter(match=spec["prefix"] + "*", count=1000))
            if keys:
                client.delete(*keys)
    elif spec["kind"] == "postgres":
        import psycopg
        from psycopg import sql

        with psycopg.connect(spec["dsn"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                         .format(sql.Identifier(spec["schema"])))


def server_versions(urls: dict[str, str]) -> dict[str, str]:
    versions = {}
    if "redis" in urls:
        import redis

        with redis.Redis.from_url(urls["redis"]) as client:
            versions["redis"] = client.info("server")["redis_version"]
    if "postgres" in urls:
        import psycopg

        with psycopg.connect(urls["postgres"]) as conn:
            versions["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="how long the writers append in each measurement")
    parser.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer_main(args.writer[0], args.writer[1], float(args.writer[2]))
        return

    env, state = start_services()
    urls = {"redis": env.get("CONTEXTWINDOW_TEST_REDIS_URL"),
            "postgres": env.get("CONTEXTWINDOW_TEST_POSTGRES_DSN")}
    urls = {kind: url for kind, url in urls.items() if url}
    tmp = tempfile.mkdtemp(prefix="contextwindow-bench.")
    result: dict[str, Any] = {
        "benchmark": "stores",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    **server_versions(urls)},
        "seconds_per_run": args.seconds, "message_chars": len(message(0).content or ""),
        "load_session_messages": LOAD_MESSAGES, "stores": {}}
    try:
        for kind in KINDS:
            if kind in ("redis", "postgres") and kind not in urls:
                reason = env.get(f"CONTEXTWINDOW_TEST_{kind.upper()}_UNAVAILABLE", "no server")
                result["stores"][kind] = {"skipped": reason}
                continue
            result["stores"][kind] = {}
            for writers in WRITER_COUNTS:
                name = uuid.uuid4().hex[:10]
                spec = {"kind": kind, "path": os.path.join(tmp, f"{name}.db"),
                        "url": urls.get("redis"), "prefix": f"cwbench-{name}:",
                        "dsn": urls.get("postgres"), "schema": f"cwbench_{name}"}
                print(f"{kind}, {writers} writer(s)...", file=sys.stderr, flush=True)
                try:
                    result["stores"][kind][f"writers_{writers}"] = measure(
                        spec, writers, args.seconds)
                finally:
                    cleanup(spec)
    finally:
        subprocess.run(["rm", "-rf", tmp], check=False)
        stop_services(state)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
