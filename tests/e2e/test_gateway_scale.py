"""Gateway replicas sharing one store: SQLite (one machine), Redis, PostgreSQL.

Real processes: the instant fake upstream, two or three ``contextwindow serve --upstream``
replicas on one store namespace, and clients (the openai package) in threads. Checked: with
8 concurrent clients on shared and separate sessions, every session's history holds every turn
once, each client's turns in its order, each reply right after its question; and a replica
killed with SIGKILL while turns run loses no acknowledged turn.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from test_gateway_fake import FAKE_MODEL, Proc, running, start_gateways

pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import DURABLE_KINDS, Backend, _backend

CLIENTS = 8
TURNS = 4


@pytest.fixture(params=DURABLE_KINDS)
def shared_store(request: Any, store_services: dict[str, str],
                 tmp_path: Any) -> Iterator[tuple[Backend, list[str]]]:
    """A fresh store namespace and the ``serve`` options that point a replica at it."""
    for backend in _backend(request.param, store_services, tmp_path):
        spec = backend.new_spec()
        if backend.kind == "sqlite":
            yield backend, ["--store", spec["path"]]
        elif backend.kind == "redis":
            yield backend, ["--store", spec["url"], "--store-namespace",
                            spec["prefix"].removesuffix(":"), "--lock-ttl", "2"]
        else:
            yield backend, ["--store", spec["dsn"], "--store-namespace", spec["schema"]]


def turn(client: openai.OpenAI, sid: str, content: str) -> str:
    reply = client.chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": content}],
        extra_headers={"X-Session-Id": sid})
    return reply.choices[0].message.content


def history(url: str, sid: str) -> list[tuple[str, str]]:
    messages = httpx.get(f"{url}/sessions/{sid}", timeout=30).json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


def check_turns(turns: list[tuple[str, str]], expected: dict[str, list[str]]) -> None:
    """Question, answer, question, answer...; every expected question once, each writer's
    questions in its order."""
    for (role, question), (reply_role, answer) in zip(turns[::2], turns[1::2], strict=True):
        assert (role, reply_role, answer) == ("user", "assistant", f"echo: {question}")
    questions = [q for _, q in turns[::2]]
    assert sorted(questions) == sorted(q for qs in expected.values() for q in qs)
    for writer, qs in expected.items():
        assert [q for q in questions if q.startswith(f"{writer}-")] == qs


def test_replicas_serve_the_same_sessions(fake: Proc,
                                          shared_store: tuple[Backend, list[str]]) -> None:
    backend, options = shared_store
    replicas = start_gateways(2 if backend.kind == "sqlite" else 3, fake.url, *options)
    with running(*replicas):
        clients = [openai.OpenAI(base_url=r.url, api_key="unused", max_retries=0, timeout=60)
                   for r in replicas]
        errors: list[BaseException] = []

        def work(k: int) -> None:
            sid = "shared" if k % 2 == 0 else f"own-{k}"
            try:
                for i in range(TURNS):  # every turn through another replica
                    turn(clients[(k + i) % len(clients)], sid, f"c{k}-{i}")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        shared = {f"c{k}": [f"c{k}-{i}" for i in range(TURNS)] for k in range(0, CLIENTS, 2)}
        for replica in replicas:
            check_turns(history(replica.url, "shared"), shared)
        for k in range(1, CLIENTS, 2):
            check_turns(history(replicas[k % len(replicas)].url, f"own-{k}"),
                        {f"c{k}": [f"c{k}-{i}" for i in range(TURNS)]})
        for replica in replicas:
            assert replica.alive()


def test_killed_replica_loses_no_acknowledged_turn(fake: Proc,
                                                   shared_store: tuple[Backend, list[str]]
                                                   ) -> None:
    _, options = shared_store
    victim, survivor = start_gateways(2, fake.url, *options)
    with running(victim, survivor):
        acked: list[str] = []
        stop = threading.Event()

        def writer(url: str, tag: str) -> None:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
            i = 0
            while not stop.is_set():
                content = f"{tag}-{i}"
                i += 1
                try:
                    assert turn(client, "crash", content) == f"echo: {content}"
                except openai.APIConnectionError:  # the victim died with this turn
                    return
                acked.append(content)

        threads = [threading.Thread(target=writer, args=(victim.url, "v")),
                   threading.Thread(target=writer, args=(survivor.url, "s"))]
        for thread in threads:
            thread.start()
        time.sleep(random.Random(7).uniform(0.5, 1.0))
        victim.kill()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        after = f"after-{len(acked)}"
        client = openai.OpenAI(base_url=survivor.url, api_key="unused", max_retries=2,
                               timeout=30)
        assert turn(client, "crash", after) == f"echo: {after}"
        turns = history(survivor.url, "crash")
        questions = [q for _, q in turns[::2]]
        for tag in ("v", "s"):
            mine = [q for q in acked if q.startswith(f"{tag}-")]
            stored = [q for q in questions if q.startswith(f"{tag}-")]
            # every acknowledged turn, in order, none twice; at most the one in flight besides
            assert stored[:len(mine)] == mine and len(stored) <= len(mine) + 1
        assert [q for q in acked if q.startswith("v-")], "the victim acknowledged nothing"
        assert questions[-1] == after and len(set(questions)) == len(questions)
        check_turns(turns, {"v": [q for q in questions if q.startswith("v-")],
                            "s": [q for q in questions if q.startswith("s-")],
                            "after": [after]})
        assert survivor.alive()


def test_store_turn_primitives(store_backend: Backend) -> None:
    """What sessions need from every store: ``append_many`` (all or nothing, in order),
    ``load(session, start)``, and per-session locks that exclude a second holder."""
    from contextwindow.errors import StoreError
    from contextwindow.messages import Message
    from contextwindow.stores.locks import session_locks

    store, _ = store_backend.new()
    batch = [Message(role="user", content=f"m{i}", id=f"id-{i}") for i in range(3)]
    store.append_many("s", batch)
    with pytest.raises(StoreError, match="already stored|UNIQUE"):
        store.append_many("s", [Message(role="user", content="new", id="id-9"), batch[1]])
    with pytest.raises(StoreError, match="already stored|UNIQUE"):
        store.append_many("s", [Message(role="user", content="a", id="twice")] * 2)
    assert [m.id for m in store.load("s")] == ["id-0", "id-1", "id-2"]
    assert [m.content for m in store.load("s", 2)] == ["m2"] and store.load("s", 7) == []
    assert [m.id for m in store.load("s", -2)] == ["id-1", "id-2"]
    assert [m.id for m in store.load("s", -9)] == ["id-0", "id-1", "id-2"]
    with pytest.raises(StoreError):
        store.load("s", "1")
    if store_backend.kind == "inmemory":
        return  # one process: the in-process lock is the whole story
    mine, theirs = session_locks(store), session_locks(store_backend.open(
        store_backend._specs[-1]))
    token = mine.try_acquire("s")
    assert token is not None
    if store_backend.kind != "sqlite":  # fcntl locks of one process never exclude each other
        assert theirs.try_acquire("s") is None
    assert theirs.try_acquire("other") is not None
    assert mine.renew("s", token) and mine.held("s", token)
    mine.release("s", token)
    again = theirs.try_acquire("s")
    assert again is not None
    theirs.release("s", again)
    mine.close()
    theirs.close()
