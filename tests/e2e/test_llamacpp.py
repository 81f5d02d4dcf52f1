"""The gateway in front of a real engine: llama.cpp's server on the SmolLM2 GGUF.

The gateway counts with the same GGUF's chat template (``--tokenizer FILE.gguf``), so its
``X-Contextwindow-Prompt-Tokens`` must equal llama.cpp's ``usage.prompt_tokens`` exactly.
The fault tests kill, restart and stop (SIGSTOP) the engine under a running gateway; they run
last, in file order, and leave the engine running.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llamacpp import ALIAS, GGUF, LlamaServer
from test_gateway_fake import Proc, running, start_gateway

from contextwindow.messages import to_openai
from contextwindow.samples import sample_conversation

pytestmark = pytest.mark.slow
CONTEXT = 256
CONVERSATIONS = 20


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaServer]:
    server = LlamaServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(engine: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    db = tmp_path_factory.mktemp("llamacpp") / "sessions.db"
    proc = start_gateway(engine.url, "--tokenizer", str(GGUF), "--store", str(db),
                         "--max-queue", "4", "--default-max-tokens", "8",
                         "--request-timeout", "60", context=CONTEXT, model=ALIAS)
    with running(proc):
        yield proc


def post(gateway: Proc, messages: list[Any], *, sid: str | None = None,
         **body: Any) -> httpx.Response:
    headers = {"X-Session-Id": sid} if sid else {}
    return httpx.post(f"{gateway.url}/chat/completions", headers=headers, timeout=120,
                      json={"model": ALIAS, "messages": messages, "max_tokens": 2, **body})


def events(reply: httpx.Response) -> list[str]:
    return [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]


def history(gateway: Proc, sid: str) -> list[tuple[str, str]]:
    reply = httpx.get(f"{gateway.url}/sessions/{sid}")
    if reply.status_code == 404:
        return []
    return [(m["role"], m["content"]) for m in reply.json()["messages"]]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- counting -----------------------------------------------------------------------------------
def test_prompt_counts_equal_llamacpps(gateway: Proc) -> None:
    rng, trimmed = random.Random(23), 0
    for seed in range(CONVERSATIONS):
        messages = to_openai(sample_conversation(rng.randint(1, 30), seed=seed, tool_every=0))
        reply = post(gateway, messages, max_tokens=1)
        assert reply.status_code == 200, reply.text
        counted = int(reply.headers["X-Contextwindow-Prompt-Tokens"])
        assert (seed, counted) == (seed, reply.json()["usage"]["prompt_tokens"])
        assert counted <= CONTEXT - 1
        trimmed += int(reply.headers["X-Contextwindow-Trimmed-Messages"]) > 0
    assert 0 < trimmed < CONVERSATIONS  # some over the window, some within


def test_developer_role_and_text_parts_are_sent_as_counted(gateway: Proc) -> None:
    reply = post(gateway, [{"role": "developer", "content": "Answer in one word."},
                           {"role": "user", "content": [{"type": "text", "text": "Capital"},
                                                        {"type": "text", "text": "of France?"}]}])
    assert reply.status_code == 200, reply.text
    assert int(reply.headers["X-Contextwindow-Prompt-Tokens"]) == (
        reply.json()["usage"]["prompt_tokens"])


# -- replies ------------------------------------------------------------------------------------
def test_plain_reply(gateway: Proc) -> None:
    reply = post(gateway, user("Say hello."), max_tokens=4).json()
    assert reply["model"] == ALIAS and reply["object"] == "chat.completion"
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert reply["usage"]["context_window"] == CONTEXT


def test_streamed_reply_gets_a_usage_chunk(gateway: Proc) -> None:
    reply = post(gateway, user("Count to five."), max_tokens=6, stream=True,
                 stream_options={"include_usage": True})
    data = events(reply)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == int(reply.headers["X-Contextwindow-Prompt-Tokens"])
    assert usage["context_window"] == CONTEXT and usage["trimmed_tokens"] == 0
    assert 1 <= usage["completion_tokens"] <= 6 + 1  # re-tokenized text: within one of the ids
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] in ("stop", "length")


def test_tool_definitions_pass_through(gateway: Proc) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    reply = post(gateway, user("Weather in Paris?"), tools=tools, max_tokens=4)
    assert reply.status_code == 200, reply.text
    assert int(reply.headers["X-Contextwindow-Prompt-Tokens"]) == (
        reply.json()["usage"]["prompt_tokens"])
    assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")


def test_session_sends_only_new_messages_and_keeps_history(gateway: Proc) -> None:
    first = post(gateway, user("My name is Ada."), sid="ada", max_tokens=3)
    second = post(gateway, user("What is my name?"), sid="ada", max_tokens=3)
    assert first.status_code == second.status_code == 200
    assert int(second.headers["X-Contextwindow-Prompt-Tokens"]) == (
        second.json()["usage"]["prompt_tokens"])
    assert [role for role, _ in history(gateway, "ada")] == ["user", "assistant"] * 2
    assert history(gateway, "ada")[2] == ("user", "What is my name?")


def test_models(gateway: Proc) -> None:
    listed = httpx.get(f"{gateway.url}/models").json()["data"]
    assert [(m["id"], m["context_window"]) for m in listed] == [(ALIAS, CONTEXT)]


# -- load ---------------------------------------------------------------------------------------
def test_bounded_concurrency_answers_or_refuses_cleanly(gateway: Proc) -> None:
    statuses: list[int] = []
    bodies: list[Any] = []

    def client(k: int) -> None:
        for i in range(5):
            reply = post(gateway, user(f"Client {k}, request {i}: say a word."), max_tokens=3)
            statuses.append(reply.status_code)
            bodies.append(reply.json())

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 40 and set(statuses) <= {200, 503}
    assert 200 in statuses
    for status, body in zip(statuses, bodies, strict=True):
        if status == 503:
            assert body["error"]["code"] == "server_overloaded"
        else:
            assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_interrupted_streams_end_in_errors_and_store_nothing(gateway: Proc) -> None:
    """llama.cpp interrupts a running stream when another request arrives: each of four
    concurrent streamed turns either finishes ([DONE], turn stored) or ends in an error."""
    outcomes: dict[str, list[str]] = {}

    def turn(sid: str) -> None:
        reply = post(gateway, user("Tell me about the sea."), sid=sid, max_tokens=24,
                     stream=True)
        assert reply.status_code == 200, reply.text
        outcomes[sid] = events(reply)

    threads = [threading.Thread(target=turn, args=(f"cut{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["cut0", "cut1", "cut2", "cut3"]
    for sid, data in outcomes.items():
        if data and data[-1] == "[DONE]":
            assert len(history(gateway, sid)) == 2
        else:
            assert json.loads(data[-1])["error"]["type"] == "server_error", data
            assert history(gateway, sid) == []


# -- faults (run last: they kill, restart and stop the engine) ----------------------------------
def test_engine_killed_mid_stream_then_restarted(gateway: Proc, engine: LlamaServer) -> None:
    body = {"model": ALIAS, "messages": user("Write a long story about a lighthouse."),
            "max_tokens": 200, "stream": True}
    seen: list[str] = []
    with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, timeout=60,
                      headers={"X-Session-Id": "killed"}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                seen.append(line[6:])
                if len(seen) == 3:
                    engine.signal(signal.SIGKILL)
    assert "[DONE]" not in seen
    error = json.loads(seen[-1])["error"]
    assert error["type"] == "server_error"
    assert error["code"] in ("upstream_unavailable", "upstream_incomplete")
    assert history(gateway, "killed") == []
    # between requests, the engine down: OpenAI-shaped 502s, health 503, nothing stored
    down = post(gateway, user("Anyone there?"), sid="killed")
    assert down.status_code == 502 and down.json()["error"]["code"] == "upstream_unavailable"
    assert httpx.get(f"{gateway.root}/health").status_code == 503
    assert history(gateway, "killed") == []
    engine.start()  # same port; the gateway is not restarted
    assert httpx.get(f"{gateway.root}/health").status_code == 200
    again = post(gateway, user("Hello again."), sid="killed", max_tokens=2)
    assert again.status_code == 200
    assert [role for role, _ in history(gateway, "killed")] == ["user", "assistant"]


def test_a_stalled_engine_gives_504(engine: LlamaServer) -> None:
    proc = start_gateway(engine.url, "--tokenizer", str(GGUF), "--store", "none",
                         "--request-timeout", "3", context=CONTEXT, model=ALIAS)
    with running(proc):
        engine.signal(signal.SIGSTOP)
        try:
            stalled = post(proc, user("Hello?"))
        finally:
            engine.signal(signal.SIGCONT)
        assert stalled.status_code == 504
        assert stalled.json()["error"]["type"] == "server_error"
        assert post(proc, user("Hello?")).status_code == 200
