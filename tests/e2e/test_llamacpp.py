"""The gateway in front of a real engine: llama.cpp's server on the SmolLM2 GGUF.

The gateway counts with the same GGUF's chat template (``--tokenizer FILE.gguf``), so its
``X-Contextwindow-Prompt-Tokens`` must equal llama.cpp's ``usage.prompt_tokens`` exactly: on
100 random conversations per template (SmolLM2's; Qwen2.5's under ``large_model``), counted
by llama.cpp without evaluating them (``llamacpp.prompt_counts``), ten of them evaluated by
the server too.
The fault tests kill, restart and stop (SIGSTOP) the engine under a running gateway; they run
last, in file order, and leave the engine running.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from llamacpp import ALIAS, GGUF, LlamaServer, prompt_counts, random_conversation
from test_gateway_fake import Proc, launch_gateway, running, start_fake, start_gateway

from contextwindow.models.loading import gguf_file
from contextwindow.models.registry import MODELS

pytestmark = pytest.mark.slow
CONTEXT = 384  # small, so that a prompt evaluates fast, and most conversations are over it
CONVERSATIONS = 100
EVALUATED = 10  # of them also sent through the gateway to llama.cpp's server
QWEN = "qwen2.5-0.5b"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaServer]:
    server = LlamaServer().start()
    try:
        yield server
    finally:
        server.stop()


def gateway_to(url: str, gguf: Path, alias: str, *store: str) -> Proc:
    """A gateway to ``url`` counting with ``gguf``'s template: the same fit wherever it
    sends (``--store none`` or ``store``: ``--store PATH``). Reading a GGUF's vocabulary
    takes transformers a while (Qwen's 151k tokens: a minute on a busy machine)."""
    return launch_gateway(url, "--tokenizer", str(gguf), *(store or ("--store", "none")),
                          "--max-queue", "4", "--default-max-tokens", "8",
                          "--request-timeout", "300", context=CONTEXT, model=alias,
                          ).ready(timeout=300)


@pytest.fixture(scope="module")
def gateway(engine: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    db = tmp_path_factory.mktemp("llamacpp") / "sessions.db"
    proc = gateway_to(engine.url, GGUF, ALIAS, "--store", str(db))
    with running(proc):
        yield proc


def post(gateway: Proc, messages: list[Any], *, sid: str | None = None,
         **body: Any) -> httpx.Response:
    headers = {"X-Session-Id": sid} if sid else {}
    return httpx.post(f"{gateway.url}/chat/completions", headers=headers, timeout=300,
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
def assert_counts_equal_llamacpps(gguf: Path, alias: str, engine_gateway: Proc) -> None:
    """The gateway's count of each random conversation (through a gateway in front of the
    recording fake: what it sent) equals llama.cpp's count of what it sent; every tenth
    conversation also goes through ``engine_gateway`` (the same settings, in front of
    llama.cpp's server), whose ``usage.prompt_tokens`` equals the gateway's count too."""
    rng = random.Random(23)
    bodies = [random_conversation(rng) for _ in range(CONVERSATIONS)]
    fake = start_fake()
    with running(fake):
        counting = gateway_to(fake.url, gguf, alias)
        with running(counting):
            replies = [post(counting, **body, model=alias, max_tokens=1) for body in bodies]
        sent = httpx.get(f"{fake.root}/debug").json()["requests"]
    assert [r.status_code for r in replies] == [200] * CONVERSATIONS, next(
        r.text for r in replies if r.status_code != 200)
    counted = [int(r.headers["X-Contextwindow-Prompt-Tokens"]) for r in replies]
    llamacpp = prompt_counts(gguf, sent)
    assert [(k, n) for k, n in enumerate(counted)] == [(k, n) for k, n in enumerate(llamacpp)]
    assert max(counted) <= CONTEXT - 1
    trimmed = sum(int(r.headers["X-Contextwindow-Trimmed-Messages"]) > 0 for r in replies)
    assert 0 < trimmed < CONVERSATIONS  # some over the window, some within
    # the cases a template renders its own way reach it: tool definitions, tool calls and
    # (consecutive) results, no system message (a default one); sent as counted: developer as
    # system, text parts joined, a null content (tool calls) as ""
    assert all(any(check(body) for body in sent) for check in COVERED)
    assert all(isinstance(m["content"], str) and m["role"] != "developer"
               for body in sent for m in body["messages"])
    for k in range(0, CONVERSATIONS, CONVERSATIONS // EVALUATED):
        reply = post(engine_gateway, **bodies[k], model=alias, max_tokens=1)
        assert reply.status_code == 200, reply.text
        assert (k, reply.json()["usage"]["prompt_tokens"]) == (k, counted[k])
        assert int(reply.headers["X-Contextwindow-Prompt-Tokens"]) == counted[k]


COVERED = (lambda body: bool(body.get("tools")),
           lambda body: any(m["role"] == "tool" for m in body["messages"]),
           lambda body: any(a["role"] == b["role"] == "tool"
                            for a, b in pairwise(body["messages"])),
           lambda body: body["messages"][0]["role"] != "system",
           lambda body: body["messages"][0]["role"] == "system" and bool(body.get("tools")))


def test_prompt_counts_equal_llamacpps(gateway: Proc) -> None:
    assert_counts_equal_llamacpps(GGUF, ALIAS, gateway)


@pytest.mark.large_model
def test_qwen_prompt_counts_equal_llamacpps(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Qwen2.5's template adds a default system prompt when there is none, renders tool
    definitions inside the system turn and wraps consecutive tool results in one user turn:
    the counter measures all three from the template (``TokenCounter.from_hf``)."""
    gguf = gguf_file(MODELS[QWEN], tmp_path_factory.mktemp("qwen"))
    engine = LlamaServer(model=gguf, alias=QWEN, n_ctx=1024).start()
    try:
        gateway = gateway_to(engine.url, gguf, QWEN)
        with running(gateway):
            assert_counts_equal_llamacpps(gguf, QWEN, gateway)
    finally:
        engine.stop()


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
