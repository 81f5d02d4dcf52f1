"""Every store behind one fixture, plus the writer processes the reliability tests start.

The Redis and PostgreSQL servers come from ``scripts/test-services.sh``: ``make test`` runs the
suite under it and passes ``CONTEXTWINDOW_TEST_REDIS_URL`` / ``CONTEXTWINDOW_TEST_POSTGRES_DSN``
(or ``..._UNAVAILABLE`` with the reason a server could not start). Run without them, the
``store_services`` fixture starts the servers itself through the same script (installing nothing).
Each test gets its own namespace: a SQLite file, a Redis key prefix, a PostgreSQL schema.

Run as ``store_fixtures.py serve``, this file is the launcher of writer processes
(see :func:`serve`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "test-services.sh"
WRITER = Path(__file__).resolve()

KINDS = ("inmemory", "sqlite", "redis", "postgres")
DURABLE_KINDS = ("sqlite", "redis", "postgres")  # an InMemoryStore dies with its process
SERVER_VARS = {"redis": "CONTEXTWINDOW_TEST_REDIS_URL",
               "postgres": "CONTEXTWINDOW_TEST_POSTGRES_DSN"}
REASON_VARS = {"redis": "CONTEXTWINDOW_TEST_REDIS_UNAVAILABLE",
               "postgres": "CONTEXTWINDOW_TEST_POSTGRES_UNAVAILABLE"}


# -- consistency of a store's recall index ----------------------------------------------------
def postgres_frequencies(store: Any) -> tuple[dict[tuple[str, str], int],
                                             dict[tuple[str, str], int]]:
    """A PostgresStore's document-frequency table, and the same counted here from its
    messages' tsvectors (one per message under the empty lexeme): equal when consistent."""
    schema = f'"{store.schema}"'

    def read(conn: Any) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        stored = {(session, lexeme): documents for session, lexeme, documents in conn.execute(
            f"SELECT session, lexeme, documents FROM {schema}.contextwindow_terms")}
        counted: Counter[tuple[str, str]] = Counter()
        for session, lexemes in conn.execute(
                f"SELECT session, tsvector_to_array(tsv) FROM {schema}.contextwindow_messages"):
            counted.update((session, lexeme) for lexeme in ["", *lexemes])
        return stored, dict(counted)

    return store._run(read)  # type: ignore[no-any-return]


# -- messages both sides agree on -------------------------------------------------------------
PAYLOAD = "é✓🎉 \ud800 \x00 '\"; DROP TABLE contextwindow_messages; -- * a:b \\ \u2028"


def message_for(tag: str, i: int) -> Any:
    """The ``i``-th message a writer tagged ``tag`` appends: known exactly to the checker."""
    from contextwindow.messages import Message

    content = f"{tag} #{i} " + PAYLOAD * (i % 4) + "x" * (300 * (i % 3))
    return Message(role="user" if i % 2 == 0 else "assistant", content=content,
                   id=f"{tag}-{i}")


def records(messages: list[Any]) -> list[dict[str, Any]]:
    """What a store must keep of each message: every field, the id included."""
    return [message.to_record() for message in messages]


# -- opening stores from a JSON-able spec (the writers get the same spec) ---------------------
_INMEMORY: dict[str, Any] = {}


def open_store(spec: dict[str, Any]) -> Any:
    kind = spec["kind"]
    if kind == "inmemory":
        from contextwindow.stores import InMemoryStore

        return _INMEMORY.setdefault(spec["name"], InMemoryStore())
    if kind == "sqlite":
        from contextwindow.stores import SQLiteStore

        return SQLiteStore(spec["path"], synchronous=spec.get("synchronous", "full"))
    if kind == "redis":
        from contextwindow.stores.redis_store import RedisStore

        return RedisStore(spec["url"], prefix=spec["prefix"])
    if kind == "postgres":
        from contextwindow.stores.postgres_store import PostgresStore

        return PostgresStore(spec["dsn"], schema=spec["schema"])
    raise ValueError(f"unknown store kind {kind!r}")


class Backend:
    """Fresh, isolated stores of one kind; everything is closed and dropped at teardown."""

    def __init__(self, kind: str, server: str | None, tmp_path: Path) -> None:
        self.kind = kind
        self.server = server
        self.tmp_path = tmp_path
        self._specs: list[dict[str, Any]] = []
        self._opened: list[tuple[dict[str, Any], Any]] = []

    @property
    def durable(self) -> bool:
        return self.kind in DURABLE_KINDS

    def new_spec(self) -> dict[str, Any]:
        name = uuid.uuid4().hex[:12]
        spec: dict[str, Any] = {"kind": self.kind, "name": name}
        if self.kind == "sqlite":
            spec["path"] = str(self.tmp_path / f"store-{name}.db")
        elif self.kind == "redis":
            spec.update(url=self.server, prefix=f"cwtest-{name}:")
        elif self.kind == "postgres":
            spec.update(dsn=self.server, schema=f"cwtest_{name}")
        self._specs.append(spec)
        return spec

    def open(self, spec: dict[str, Any]) -> Any:
        store = open_store(spec)
        self._opened.append((spec, store))
        return store

    def new(self) -> tuple[Any, dict[str, Any]]:
        spec = self.new_spec()
        return self.open(spec), spec

    def drop(self, spec: dict[str, Any]) -> None:
        """Close the stores opened on ``spec`` and remove its data."""
        for opened_spec, store in [pair for pair in self._opened if pair[0] is spec]:
            store.close()
            self._opened.remove((opened_spec, store))
        if self.kind == "inmemory":
            _INMEMORY.pop(spec["name"], None)
        elif self.kind == "redis":
            import redis

            with redis.Redis.from_url(self.server) as client:
                keys = list(client.scan_iter(match=spec["prefix"] + "*", count=1000))
                if keys:
                    client.delete(*keys)
        elif self.kind == "postgres":
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                             .format(sql.Identifier(spec["schema"])))

    def cleanup(self) -> None:
        for spec in list(self._specs):
            self.drop(spec)
        self._specs.clear()


def start_services() -> Iterator[dict[str, str]]:
    """The test servers' URLs (or reasons): from the environment, else started here."""
    found = {var: os.environ[var] for var in [*SERVER_VARS.values(), *REASON_VARS.values()]
             if os.environ.get(var)}
    missing = [kind for kind in SERVER_VARS
               if SERVER_VARS[kind] not in found and REASON_VARS[kind] not in found]
    if not missing:
        yield found
        return
    state = tempfile.mkdtemp(prefix="contextwindow-services.")
    env = {**os.environ, "CONTEXTWINDOW_INSTALL_SERVICES": "0"}
    try:
        out = subprocess.run(["bash", str(SERVICES), "start", state], env=env, text=True,
                             capture_output=True, timeout=180, check=False)
        for line in out.stdout.splitlines():
            var, _, value = line.partition("=")
            if var in found or not value:
                continue
            found[var] = value
        for kind in missing:
            if SERVER_VARS[kind] not in found and REASON_VARS[kind] not in found:
                found[REASON_VARS[kind]] = (f"{SERVICES.name} could not start it: "
                                            f"{out.stderr.strip()[-300:]}")
        for kind in missing:
            if REASON_VARS[kind] in found:
                found[REASON_VARS[kind]] += " (`make test` installs the Debian package)"
        yield found
    finally:
        subprocess.run(["bash", str(SERVICES), "stop", state], timeout=180, check=False)


def server_for(kind: str, services: dict[str, str]) -> tuple[str | None, str | None]:
    """(url, None) for a server that runs, (None, reason) for one that does not."""
    if kind not in SERVER_VARS:
        return None, None
    url = services.get(SERVER_VARS[kind])
    if url:
        return url, None
    return None, services.get(REASON_VARS[kind], "no server")


# -- the work the writer processes (and threads) do ----------------------------------------
def concurrent_work(store: Any, writer: int, count: int, dups: int) -> list[int]:
    """Writer ``writer`` appends ``count`` messages to the shared session and to its own one,
    interleaved, then races the other writers for ids ``dup-0..dups-1`` in session ``dups``.
    Returns the dup ids it won (its append returned); the others must raise StoreError."""
    from contextwindow.errors import StoreError
    from contextwindow.messages import Message

    tag = f"w{writer}"
    for i in range(count):
        store.append("shared", message_for(tag, i))
        store.append(f"own-{writer}", message_for(tag, i))
    won = []
    for i in range(dups):
        try:
            store.append("dups", Message(role="user", content=f"won by {writer}", id=f"dup-{i}"))
        except StoreError as exc:  # the loser's error names the duplicate
            if not any(why in str(exc) for why in ("already stored", "UNIQUE constraint")):
                raise
        else:
            won.append(i)
    return won


def run_threads(store: Any, writers: int, count: int, dups: int) -> list[list[int]]:
    results: list[list[int] | BaseException] = [[] for _ in range(writers)]
    barrier = threading.Barrier(writers)

    def work(k: int) -> None:
        try:
            barrier.wait()
            results[k] = concurrent_work(store, k, count, dups)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the caller)
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def crash_writer(spec: dict[str, Any], session: str, tag: str, acks: str) -> None:
    """Add ``message_for(tag, i)`` for i = 0, 1, ... through a memory, recording each id in
    the file ``acks`` only after ``add`` returned; runs until killed."""
    from contextwindow.memory import BufferMemory
    from contextwindow.tokens import TokenCounter

    store = open_store(spec)
    memory = BufferMemory(counter=TokenCounter.approximate(), store=store, session=session)
    with open(acks, "a", encoding="utf-8") as out:
        i = 0
        while True:
            message = message_for(tag, i)
            memory.add(message.role, message.content, id=message.id)
            out.write(message.id + "\n")
            out.flush()  # in the kernel now: a SIGKILL cannot take it back
            i += 1


def concurrent_writer(spec: dict[str, Any], writer: int, count: int, dups: int,
                      results: str, gate: int) -> None:
    """Open the store, wait at the gate for the other writers, run :func:`concurrent_work`,
    and write the won ids to ``results/<writer>.json``."""
    store = open_store(spec)
    os.read(gate, 1)  # EOF once every writer is forked: they all start together
    won = concurrent_work(store, writer, count, dups)
    store.close()
    Path(results, f"{writer}.json").write_text(json.dumps(won))


def _child(work: Any, *args: Any) -> None:
    """Run ``work(*args)`` in a forked child and leave with its status, never returning."""
    code = 1
    try:
        work(*args)
        code = 0
    except BaseException:  # noqa: BLE001 (printed; the exit status reports it)
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The writer launcher: imports everything once, then forks writer processes on request,
    so each killed writer costs a fork rather than an interpreter start. One JSON command per
    line on stdin, one JSON reply per line on stdout:

    - ``{"op": "crash", "spec", "session", "tag", "acks"}``: fork a :func:`crash_writer`;
      reply ``{"pid"}``.
    - ``{"op": "concurrent", "spec", "writers", "count", "dups", "results"}``: fork the writers,
      each opens its store and waits for the others, then runs :func:`concurrent_work` and
      writes its won ids to ``results/<k>.json``; reply ``{"pids"}``.
    - ``{"op": "wait", "pid"}``: reap it; reply ``{"signal"}`` (or null) and ``{"code"}``.
    """
    import importlib

    for module in ("contextwindow.memory", "contextwindow.tokens", "contextwindow.stores",
                   "contextwindow.stores.redis_store", "contextwindow.stores.postgres_store",
                   "redis", "psycopg"):  # imported before forking: the children start warm
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "crash":
            pid = os.fork()
            if pid == 0:
                _child(crash_writer, command["spec"], command["session"], command["tag"],
                       command["acks"])
            reply: dict[str, Any] = {"pid": pid}
        elif op == "concurrent":
            gate_read, gate_write = os.pipe()
            pids = []
            for k in range(command["writers"]):
                pid = os.fork()
                if pid == 0:
                    os.close(gate_write)
                    _child(concurrent_writer, command["spec"], k, command["count"],
                           command["dups"], command["results"], gate_read)
                pids.append(pid)
            os.close(gate_read)
            os.close(gate_write)
            reply = {"pids": pids}
        elif op == "wait":
            _, status = os.waitpid(command["pid"], 0)
            reply = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                     "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        else:
            raise SystemExit(f"unknown op {op!r}")
        print(json.dumps(reply), flush=True)


class Writers:
    """The test side of :func:`serve`: one launcher process for the whole test run."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, str(WRITER), "serve"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lock = threading.Lock()
        reply = self._read()
        if reply != {"ready": True}:
            raise RuntimeError(f"the writer launcher did not start: {reply!r}")

    def _read(self) -> Any:
        line = self._proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the writer launcher died ({self._proc.wait()})")
        return json.loads(line)

    def _ask(self, **command: Any) -> Any:
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
            return self._read()

    def crash_writer(self, spec: dict[str, Any], session: str, tag: str, acks: Path) -> int:
        return self._ask(op="crash", spec=spec, session=session, tag=tag, acks=str(acks))["pid"]

    def concurrent(self, spec: dict[str, Any], writers: int, count: int, dups: int,
                   results: Path) -> list[int]:
        return self._ask(op="concurrent", spec=spec, writers=writers, count=count, dups=dups,
                         results=str(results))["pids"]

    def wait(self, pid: int) -> tuple[int | None, int | None]:
        """(signal, exit code) of a finished writer."""
        reply = self._ask(op="wait", pid=pid)
        return reply["signal"], reply["code"]

    def close(self) -> None:
        self._proc.stdin.close()  # type: ignore[union-attr]
        self._proc.wait(timeout=30)
        self._proc.stdout.close()  # type: ignore[union-attr]


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit(f"usage: {sys.argv[0]} serve")
    serve()
else:  # the pytest fixtures (writer processes start faster without importing pytest)
    import pytest

    @pytest.fixture(scope="session")
    def store_services() -> Iterator[dict[str, str]]:
        yield from start_services()

    @pytest.fixture(scope="session")
    def store_writers() -> Iterator[Writers]:
        """Starts writer processes (forked from one warm launcher) for the reliability tests."""
        launcher = Writers()
        try:
            yield launcher
        finally:
            launcher.close()

    def _backend(kind: str, services: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
        server, reason = server_for(kind, services)
        if reason is not None:
            pytest.skip(f"{kind} server unavailable: {reason}")
        backend = Backend(kind, server, tmp_path)
        try:
            yield backend
        finally:
            backend.cleanup()

    @pytest.fixture(params=KINDS)
    def store_backend(request: Any, store_services: dict[str, str],
                      tmp_path: Path) -> Iterator[Backend]:
        """Each test runs once per store kind."""
        yield from _backend(request.param, store_services, tmp_path)

    @pytest.fixture(params=DURABLE_KINDS)
    def durable_store_backend(request: Any, store_services: dict[str, str],
                              tmp_path: Path) -> Iterator[Backend]:
        """The stores that outlive their process."""
        yield from _backend(request.param, store_services, tmp_path)

    @pytest.fixture
    def redis_backend(store_services: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
        yield from _backend("redis", store_services, tmp_path)

    @pytest.fixture
    def postgres_backend(store_services: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
        yield from _backend("postgres", store_services, tmp_path)
