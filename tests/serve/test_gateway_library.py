"""The gateway built in Python (``create_gateway``), no command line: served by uvicorn in a
thread in front of the fake upstream process, it fits each turn of a stored session."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import loopback_upstream
from test_gateway_fake import FAKE_MODEL, Proc

from contextwindow.errors import ConfigError, StoreError
from contextwindow.messages import Message, ToolCall, to_openai
from contextwindow.samples import sample_conversation
from contextwindow.serve import (
    PROMPT_TOKENS_HEADER,
    SESSION_HEADER,
    TRIMMED_MESSAGES_HEADER,
    TRIMMED_TOKENS_HEADER,
    BackgroundServer,
    UpstreamBackend,
    WindowPolicy,
    create_gateway,
)
from contextwindow.stores import SQLiteStore
from contextwindow.stores import open as open_store
from contextwindow.tokens import TokenCounter
from contextwindow.trim import trim

CONTEXT = 600
REPLY = 64
COUNTER = TokenCounter.for_model(FAKE_MODEL)


def sent(fake: Proc) -> list[dict[str, Any]]:
    """The messages of the last request the fake upstream received."""
    return httpx.get(f"{fake.root}/debug").json()["requests"][-1]["messages"]


def turn(server: BackgroundServer, session: str, messages: list[Message]) -> httpx.Response:
    reply = httpx.post(f"{server.url}/chat/completions", headers={SESSION_HEADER: session},
                       json={"model": FAKE_MODEL, "max_tokens": REPLY,
                             "messages": to_openai(messages)}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply


def check_fit(reply: httpx.Response, conversation: list[Message], fake: Proc) -> None:
    """The upstream got the newest turns that fit ``CONTEXT - REPLY`` (trim's rules), and the
    headers say what that prompt costs by the gateway's counter and what was left out."""
    kept = trim(conversation, CONTEXT - REPLY, COUNTER)
    assert len(kept) < len(conversation)  # the session outgrew the window
    assert sent(fake) == to_openai(kept)
    prompt = COUNTER.count_messages(kept)
    assert reply.headers[PROMPT_TOKENS_HEADER] == str(prompt)
    assert reply.headers[TRIMMED_MESSAGES_HEADER] == str(len(conversation) - len(kept))
    assert reply.headers[TRIMMED_TOKENS_HEADER] == str(
        COUNTER.count_messages(conversation) - prompt)
    assert reply.json()["usage"]["context_window"] == CONTEXT


def test_a_gateway_built_in_python_serves_fitted_session_turns(fake: Proc,
                                                               tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    app = create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, cache_aware=False,
                         store=url, served_model=FAKE_MODEL)
    first = sample_conversation(12, seed=3, tool_every=0)
    second = Message(role="user", content="And what did I ask first?")
    with BackgroundServer(app) as server:
        reply = turn(server, "lib-1", first)
        check_fit(reply, first, fake)
        answer = Message(role="assistant", content=f"echo: {first[-1].content}")
        assert reply.json()["choices"][0]["message"]["content"] == answer.content
        # The next turn sends only its new message: the history comes from the store.
        reply = turn(server, "lib-1", [second])
        check_fit(reply, [*first, answer, second], fake)
        listed = httpx.get(f"{server.url}/sessions/lib-1").json()["messages"]
    expected = [*first, answer, second,
                Message(role="assistant", content=f"echo: {second.content}")]
    assert [(m["role"], m["content"]) for m in listed] == [(m.role, m.content) for m in expected]
    store = open_store(url)
    try:
        assert isinstance(store, SQLiteStore)
        assert [(m.role, m.content) for m in store.load("lib-1")] == [
            (m.role, m.content) for m in expected]
    finally:
        store.close()


def test_a_gateway_without_a_store_keeps_no_sessions(fake: Proc) -> None:
    app = create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, tokenizer=COUNTER)
    with BackgroundServer(app) as server:
        reply = httpx.post(f"{server.url}/chat/completions", headers={SESSION_HEADER: "s"},
                           json={"model": FAKE_MODEL, "messages": [
                               {"role": "user", "content": "hi"}]}, timeout=30)
        assert (reply.status_code, reply.json()["error"]["code"]) == (400, "sessions_disabled")
        plain = httpx.post(f"{server.url}/chat/completions", json={
            "model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert plain.json()["choices"][0]["message"]["content"] == "echo: hi"
        assert plain.headers[PROMPT_TOKENS_HEADER] == str(COUNTER.count_messages(
            [Message(role="user", content="hi")]))


def test_a_gateway_refuses_what_it_cannot_build(fake: Proc) -> None:
    with pytest.raises(ConfigError, match="unknown summarizer 'llm'; expected one of "
                                          "keyfacts, upstream, or a Summarizer"):
        create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, summarizer="llm")
    with pytest.raises(ConfigError, match="unknown policy 'drop'"):
        create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, policy="drop")
    with pytest.raises(StoreError, match="unknown store URL scheme 'mongodb'"):
        create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, store="mongodb://x")


def test_the_recall_policy_brings_back_an_old_turn_from_the_session_store(
        fake: Proc, tmp_path: Path) -> None:
    """A session turn under ``policy="recall"``: the fact said in the first turn, long out of
    the window, comes back from the SQLite index in the block before the newest question."""
    from contextwindow.window import RECALL_HEADER

    app = create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT, policy="recall",
                         store=f"sqlite:///{tmp_path / 'recall.sqlite3'}",
                         served_model=FAKE_MODEL)
    fact = {"role": "user", "content": "My locker code is 4417, please remember it.",
            "timestamp": "2023-05-08"}  # a gateway client may date its messages
    filler = [m for m in sample_conversation(40, seed=5, tool_every=0) if m.role == "user"]
    with BackgroundServer(app) as server:
        first = httpx.post(f"{server.url}/chat/completions", headers={SESSION_HEADER: "recall-1"},
                           json={"model": FAKE_MODEL, "max_tokens": REPLY, "messages": [fact]},
                           timeout=30)
        assert first.status_code == 200, first.text
        for message in filler:
            turn(server, "recall-1", [message])
        question = Message(role="user", content="What is my locker code?")
        reply = turn(server, "recall-1", [question])
    forwarded = sent(fake)
    assert forwarded[-1] == {"role": "user", "content": "What is my locker code?"}
    block = forwarded[-2]
    assert block["role"] == "system" and block["content"].startswith(RECALL_HEADER)
    assert "[8 May 2023] user: My locker code is 4417, please remember it." in block["content"]
    assert {"role": "user", "content": fact["content"]} not in forwarded  # quoted only
    prompt = int(reply.headers[PROMPT_TOKENS_HEADER])
    assert prompt == COUNTER.count_messages([Message(**m) for m in forwarded])
    assert prompt <= CONTEXT - REPLY


def test_the_forwarded_body_is_the_request_with_the_fitted_messages() -> None:
    """The upstream body, spliced from each message's memoised JSON, decodes to the client's
    fields, the upstream model and the fitted messages (unicode, parts, tool calls, provider
    fields as given), in ASCII; a message sent again is not encoded again."""
    seen: list[bytes] = []
    reply = {"choices": [{"message": {"role": "assistant", "content": "ok"},
                          "finish_reason": "stop"}]}
    call = ToolCall(id="c1", name="lookup", arguments='{"q": "café"}')
    messages = [Message(role="system", content="Réponds brièvement. 日本"),
                Message(role="user", content=[{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b ☃"}]),
                Message(role="assistant", tool_calls=(call,)),
                Message(role="tool", content="fermé", tool_call_id="c1"),
                Message(role="assistant", content="x", extra={"refusal": None}),
                Message(role="user", content="Et demain ?")]
    extra = {"temperature": 0.5, "user": "zoë", "stop": ["\n"], "metadata": {"k": [1, "é"]}}
    payload = {"model": FAKE_MODEL, "messages": to_openai(messages), **extra}

    async def twice() -> UpstreamBackend:
        async def connected() -> bool:
            return False

        async with loopback_upstream(reply, seen) as url:
            backend = UpstreamBackend(url, upstream_model="up-model",
                                      window=WindowPolicy(COUNTER, CONTEXT),
                                      served_model=FAKE_MODEL)
            for _ in range(2):
                await backend.answer(backend.parse(payload), connected)
            await backend.aclose()
        return backend

    backend = asyncio.run(twice())
    expected = {**extra, "model": "up-model", "max_tokens": 512,
                "messages": to_openai(messages)}
    assert seen[0] == seen[1] and seen[0].isascii()
    assert json.loads(seen[0]) == expected
    assert backend._encoded.cache_info().hits == len(messages)  # the second request's


def test_a_streamed_event_of_any_length_and_line_ending_is_relayed_whole() -> None:
    """The upstream's event stream split anywhere (inside a UTF-8 character too), CRLF or LF
    line ends, one event far past aiohttp's 64 KiB line limit: every event reaches the client
    as sent, and the reply is complete."""
    arguments = json.dumps({"text": "é" * 150_000})
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Voilà"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{
            "index": 0, "id": "c1", "type": "function",
            "function": {"name": "store", "arguments": arguments}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    stream = b"".join(f"data: {json.dumps(c)}{end}{end}".encode()
                      for c, end in zip(chunks, ("\r\n", "\n", "\r\n"), strict=True))
    stream += b"data: [DONE]\n\n"
    cuts = [0, 7, 100, 65_537, 65_538, len(stream) - 3, len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(cuts)]
    payload = {"model": FAKE_MODEL, "stream": True,
               "messages": [{"role": "user", "content": "Store this."}]}

    async def relayed() -> tuple[list[str], Any]:
        async def connected() -> bool:
            return False

        async with loopback_upstream(pieces) as url:
            backend = UpstreamBackend(url, upstream_model="up-model",
                                      window=WindowPolicy(COUNTER, CONTEXT),
                                      served_model=FAKE_MODEL)
            answer = await backend.answer(backend.parse(payload), connected)
            events = [event async for event in answer.events]
            await answer.close()
            await backend.aclose()
        return events, answer.tap

    events, tap = asyncio.run(relayed())
    sent = [json.loads(e.removeprefix("data: ")) for e in events]
    assert [s["choices"] for s in sent] == [c["choices"] for c in chunks]
    assert all(s["model"] == FAKE_MODEL for s in sent)
    assert tap.complete and tap.finish == "tool_calls"
    assert tap.tool_calls[0]["arguments"] == arguments
