"""The gateway (``contextwindow serve --upstream``) as real processes, driven by the openai client.

The upstream is the instant fake of ``test_gateway_fake.py``, which records every request, so
each test checks what the gateway really sent (the fitted messages, exactly) as well as what it
answered. Expected values come from ``trim`` with tiktoken's counter and the cache-aware
``CachePolicy`` (the gateway's default cut), never from the gateway.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from test_gateway_fake import CLI, FAKE_MODEL, Proc, free_port, running, start_gateway

from contextwindow.adapters import as_messages
from contextwindow.caching import replay, trimmer
from contextwindow.messages import to_openai
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter
from contextwindow.trim import CachePolicy, trim

CONTEXT = 256
KEY = "sk-test-gateway-key-0123456789"
CUT = CachePolicy()


@pytest.fixture(scope="module")
def gateway(fake: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    db = tmp_path_factory.mktemp("gateway") / "sessions.db"
    proc = start_gateway(fake.url, "--store", str(db), "--request-timeout", "3",
                         "--default-max-tokens", "32", context=CONTEXT)
    with running(proc):
        yield proc
    assert "Traceback" not in proc.stop()


@pytest.fixture(scope="module")
def client(gateway: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0, timeout=30)


def sent(fake: Proc) -> list[dict[str, Any]]:
    """What the fake upstream received, request by request."""
    return httpx.get(f"{fake.root}/debug").json()["requests"]


def session(client: openai.OpenAI, sid: str, content: str, **options: Any) -> Any:
    return client.chat.completions.create(model=FAKE_MODEL, extra_headers={"X-Session-Id": sid},
                                          messages=[{"role": "user", "content": content}],
                                          **options)


def history(gateway: Proc, sid: str) -> list[tuple[str, str]]:
    reply = httpx.get(f"{gateway.url}/sessions/{sid}")
    assert reply.status_code == 200
    return [(m["role"], m["content"]) for m in reply.json()["messages"]]


# -- forwarding and fitting ---------------------------------------------------------------------
def test_forwards_a_fitted_conversation(client: openai.OpenAI, fake: Proc) -> None:
    conversation = to_openai(sample_conversation(30, seed=3))
    counter = TokenCounter.for_model(FAKE_MODEL)
    expected = trim(as_messages(conversation), CONTEXT - 40, counter, cache_policy=CUT)
    raw = client.chat.completions.with_raw_response.create(
        model=FAKE_MODEL, messages=conversation, max_tokens=40, temperature=0.5)
    reply = raw.parse()
    forwarded = sent(fake)[-1]
    assert forwarded["messages"] == to_openai(expected)
    assert (forwarded["max_tokens"], forwarded["temperature"]) == (40, 0.5)
    assert reply.choices[0].message.content == f"echo: {conversation[-1]['content']}"
    original = counter.count_messages(as_messages(conversation))
    kept = counter.count_messages(expected)
    assert kept <= CONTEXT - 40
    assert raw.headers["x-contextwindow-prompt-tokens"] == str(kept)
    assert reply.usage.model_extra["trimmed_tokens"] == original - kept
    assert reply.usage.model_extra["trimmed_messages"] == len(conversation) - len(expected)
    assert raw.headers["x-contextwindow-trimmed-messages"] == str(len(conversation) - len(expected))


def test_default_reserve_is_sent_as_max_tokens(client: openai.OpenAI, fake: Proc) -> None:
    client.chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "x"}])
    assert sent(fake)[-1]["max_tokens"] == 32
    client.chat.completions.create(model=FAKE_MODEL, max_completion_tokens=20,
                                   messages=[{"role": "user", "content": "x"}])
    assert sent(fake)[-1]["max_completion_tokens"] == 20 and "max_tokens" not in sent(fake)[-1]


def test_streaming_passes_chunks_and_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "one two"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two "
    assert chunks[-1].usage.model_extra == {"trimmed_tokens": 0, "trimmed_messages": 0,
                                            "context_window": CONTEXT}


def test_models_are_forwarded(client: openai.OpenAI) -> None:
    (card,) = client.models.list().data
    assert (card.id, card.model_extra["context_window"]) == (FAKE_MODEL, CONTEXT)
    assert card.owned_by == "contextwindow"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


# -- upstream failures --------------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 500, 503])
def test_upstream_errors_pass_with_retry_after(gateway: Proc, status: int) -> None:
    reply = httpx.post(f"{gateway.url}/chat/completions", json={
        "model": FAKE_MODEL, "messages": [{"role": "user", "content": f"__status:{status}"}]})
    assert (reply.status_code, reply.headers["retry-after"]) == (status, "7")
    assert reply.json()["error"]["message"] == f"fake {status}"


def test_upstream_timeout_is_504_and_cancels_upstream(gateway: Proc, fake: Proc) -> None:
    start = time.monotonic()
    reply = httpx.post(f"{gateway.url}/chat/completions", timeout=30, json={
        "model": FAKE_MODEL, "messages": [{"role": "user", "content": "__slow:8"}]})
    assert reply.status_code == 504 and reply.json()["error"]["code"] in ("timeout",
                                                                          "upstream_timeout")
    assert time.monotonic() - start < 7
    deadline = time.monotonic() + 5
    while "__slow:8" not in httpx.get(f"{fake.root}/debug").json()["cancelled"]:
        assert time.monotonic() < deadline, "the upstream request was not cancelled"
        time.sleep(0.1)


def test_client_disconnect_cancels_the_upstream_request(gateway: Proc, fake: Proc) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{gateway.url}/chat/completions", timeout=0.5, json={
            "model": FAKE_MODEL, "messages": [{"role": "user", "content": "__slow:2.5"}]})
    deadline = time.monotonic() + 5
    while "__slow:2.5" not in httpx.get(f"{fake.root}/debug").json()["cancelled"]:
        assert time.monotonic() < deadline, "the upstream request was not cancelled"
        time.sleep(0.1)


def test_unreachable_upstream_is_502(tmp_path: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = start_gateway(dead, "--store", "none")
    with running(proc):
        reply = httpx.post(f"{proc.url}/chat/completions", json={
            "model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert reply.status_code == 502
        assert reply.json()["error"]["code"] == "upstream_unavailable"


# -- sessions -----------------------------------------------------------------------------------
def test_session_sends_history_and_stores_turns(client: openai.OpenAI, gateway: Proc,
                                                fake: Proc) -> None:
    assert session(client, "alice", "my name is Alice").choices[0].message.content == \
        "echo: my name is Alice"
    stream = session(client, "alice", "what is my name?", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "echo: what is my name? "
    assert sent(fake)[-1]["messages"] == [
        {"role": "user", "content": "my name is Alice"},
        {"role": "assistant", "content": "echo: my name is Alice"},
        {"role": "user", "content": "what is my name?"}]
    session(client, "bob", "hi")
    assert sent(fake)[-1]["messages"] == [{"role": "user", "content": "hi"}]  # no Alice here
    assert history(gateway, "alice") == [
        ("user", "my name is Alice"), ("assistant", "echo: my name is Alice"),
        ("user", "what is my name?"), ("assistant", "echo: what is my name? ")]


def test_failed_turns_store_nothing(client: openai.OpenAI, gateway: Proc) -> None:
    session(client, "carol", "first")
    with pytest.raises(openai.RateLimitError):
        session(client, "carol", "__status:429")
    with pytest.raises(openai.BadRequestError):
        session(client, "carol", "x" * (CONTEXT * 40))
    assert history(gateway, "carol") == [("user", "first"), ("assistant", "echo: first")]


def test_client_gone_mid_stream_stores_nothing_and_frees_the_session(
        client: openai.OpenAI, gateway: Proc) -> None:
    session(client, "erin", "first")
    body = {"model": FAKE_MODEL, "stream": True,
            "messages": [{"role": "user", "content": "__drip:0.5 a b c d e f g h"}]}
    with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, timeout=30,
                      headers={"X-Session-Id": "erin"}) as reply:
        assert reply.status_code == 200
        next(reply.iter_lines())  # the first chunk, then hang up
    start = time.monotonic()
    assert session(client, "erin", "second").choices[0].message.content == "echo: second"
    assert time.monotonic() - start < 8  # not stuck behind a lock left behind
    assert history(gateway, "erin") == [("user", "first"), ("assistant", "echo: first"),
                                        ("user", "second"), ("assistant", "echo: second")]


def test_session_delete(client: openai.OpenAI, gateway: Proc) -> None:
    unknown = httpx.get(f"{gateway.url}/sessions/nope")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "session_not_found")
    session(client, "dave", "hello")
    deleted = httpx.delete(f"{gateway.url}/sessions/dave")
    assert deleted.json() == {"id": "dave", "object": "session.deleted", "deleted": True}
    gone = httpx.get(f"{gateway.url}/sessions/dave")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "session_not_found"
    session(client, "dave", "again")
    assert history(gateway, "dave") == [("user", "again"), ("assistant", "echo: again")]


@pytest.mark.parametrize("sid", ["", "a b", "../etc", "x" * 129, "é".encode(), "-lead", "a/b",
                                 "a\tb"])
def test_bad_session_ids_are_400(gateway: Proc, sid: str | bytes) -> None:
    reply = httpx.post(f"{gateway.url}/chat/completions", headers={"X-Session-Id": sid}, json={
        "model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_session_id"


def test_session_history_is_trimmed_not_lost(client: openai.OpenAI, gateway: Proc,
                                             fake: Proc) -> None:
    forwarded = []
    for i in range(24):
        session(client, "long", f"message number {i} " + "word " * (8 + 7 * (i % 3)))
        forwarded.append(sent(fake)[-1]["messages"])
    counter = TokenCounter.for_model(FAKE_MODEL)
    stored = as_messages([{"role": r, "content": c} for r, c in history(gateway, "long")])
    assert len(stored) == 48
    for turn, prompt in enumerate(forwarded):  # each turn cut as the history says
        expected = trim(stored[:2 * turn + 1], CONTEXT - 32, counter, cache_policy=CUT)
        assert prompt == to_openai(expected)
        assert counter.count_messages(expected) <= CONTEXT - 32
    assert len(forwarded[-1]) < 47


def test_a_sessions_prompts_keep_their_prefix_for_the_upstream_cache(
        client: openai.OpenAI, gateway: Proc, fake: Proc) -> None:
    forwarded = []
    for i in range(30):
        session(client, "cached", f"turn {i}: " + "some words " * (1 + 2 * (i % 3)))
        forwarded.append(as_messages(sent(fake)[-1]["messages"]))
    counter, budget = TokenCounter.for_model(FAKE_MODEL), CONTEXT - 32
    stored = as_messages([{"role": r, "content": c} for r, c in history(gateway, "cached")])
    # What the upstream saw, measured as caching.replay measures any policy: turn k's prompt.
    sent_report = replay(stored, lambda so_far: forwarded[len(so_far) // 2], counter, budget)
    expected = replay(stored, trimmer("cache", budget, counter), counter, budget)
    newest = replay(stored, trimmer("newest", budget, counter), counter, budget)
    assert sent_report.summary() == expected.summary()
    assert sent_report.cuts == 8 and newest.cuts == 23  # 30 turns: 8 re-cuts, not 23 shifts
    assert sent_report.reuse > 0.6 and newest.reuse < 0.1
    assert max(counter.count_messages(p) for p in forwarded) <= budget


def test_summary_policy_keeps_the_facts_of_what_it_leaves_out(fake: Proc, tmp_path: Any) -> None:
    from contextwindow.messages import SUMMARY_PREFIX

    proc = start_gateway(fake.url, "--store", str(tmp_path / "s.db"), "--overflow", "summary",
                         "--default-max-tokens", "32", context=CONTEXT)
    with running(proc):
        client = openai.OpenAI(base_url=proc.url, api_key="unused", max_retries=0)
        session(client, "fred", "My booking code is XK42Q and the flight leaves on 14 March.")
        for i in range(10):  # no facts in these (no digits, names or quotes)
            session(client, "fred", f"filler turn {'abcdefghij'[i]} " + "words " * 15)
        forwarded = sent(fake)[-1]["messages"]
        summaries = [m for m in forwarded if m["content"].startswith(SUMMARY_PREFIX)]
        assert len(summaries) == 1 and forwarded[0] == summaries[0]
        assert "XK42Q" in summaries[0]["content"] and "14 March" in summaries[0]["content"]
        assert forwarded[-1]["content"].startswith("filler turn j")
        counter = TokenCounter.for_model(FAKE_MODEL)
        assert counter.count_messages(as_messages(forwarded)) <= CONTEXT - 32
        assert len(history(proc, "fred")) == 22  # the store keeps everything


# -- security -----------------------------------------------------------------------------------
def test_api_key_is_required_when_set(fake: Proc) -> None:
    proc = start_gateway(fake.url, "--store", "memory", "--api-key-env", "GW_TEST_KEY",
                         env={"GW_TEST_KEY": KEY})
    with running(proc):
        body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            reply = httpx.post(f"{proc.url}/chat/completions", json=body, headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "invalid_api_key"
            assert KEY not in reply.text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=proc.url, api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=proc.url, api_key=KEY, max_retries=0)
        assert good.chat.completions.create(**body).choices[0].message.content == "echo: x"
        assert httpx.get(f"{proc.root}/health").status_code == 200
    assert KEY not in proc.stop()


def test_refuses_public_bind_without_key(fake: Proc) -> None:
    run = subprocess.run([*CLI, "serve", "--upstream", fake.url, "--upstream-model", FAKE_MODEL,
                          "--upstream-context", "256", "--host", "0.0.0.0", "--store", "none"],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "CONTEXTWINDOW_API_KEY": ""})
    assert run.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in run.stderr + run.stdout


def test_body_limit_and_nesting(gateway: Proc) -> None:
    url = f"{gateway.url}/chat/completions"
    big = httpx.post(url, content=b"{" + b" " * (5 * 1024 * 1024) + b"}")
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(80):
            yield b" " * 65536

    assert httpx.post(url, content=chunks()).status_code == 413
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 40 + b"1" + b"}" * 40,
                 b"{\"model\": NaN}", b"\xff\xfe", b""):
        reply = httpx.post(url, content=body)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"


def test_huge_message_is_refused_before_counting(gateway: Proc) -> None:
    text = "word " * 400_000  # 2 MB: under the body limit, far over a 256-token window
    start = time.monotonic()
    reply = httpx.post(f"{gateway.url}/chat/completions", timeout=30, json={
        "model": FAKE_MODEL, "messages": [{"role": "user", "content": text}]})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "context_length_exceeded"
    assert "characters" in reply.json()["error"]["message"]
    assert time.monotonic() - start < 10  # no timing claim: only that it did not hang


def test_concurrent_turns_of_one_session_are_serialised(gateway: Proc) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0, timeout=60)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(3):
                session(client, "shared-1", f"w{k}-{i}")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    turns = history(gateway, "shared-1")
    assert len(turns) == 48
    for (role, content), (reply_role, reply) in zip(turns[::2], turns[1::2], strict=True):
        assert (role, reply_role, reply) == ("user", "assistant", f"echo: {content}")
    users = [content for _, content in turns[::2]]
    assert sorted(users) == sorted(f"w{k}-{i}" for k in range(8) for i in range(3))
    for k in range(8):
        assert [u for u in users if u.startswith(f"w{k}-")] == [f"w{k}-{i}" for i in range(3)]


# -- end to end on the real model ---------------------------------------------------------------
@pytest.mark.slow
def test_gateway_in_front_of_a_local_contextwindow_server(tmp_path: Any) -> None:
    """Upstream: ``contextwindow serve`` on SmolLM2. The gateway counts with the model's own
    tokenizer and chat template, so the prompt it sends is exactly as long as it says."""
    from contextwindow.models import DEFAULT_MODEL, resolve

    port = free_port()
    upstream = Proc([*CLI, "serve", "--model", DEFAULT_MODEL, "--port", str(port), "--threads",
                     "1", "--store", "none", "--log-level", "warning"], port).ready(timeout=300)
    gateway_proc = start_gateway(upstream.url, "--tokenizer", str(resolve()), "--store",
                                 str(tmp_path / "s.db"), context=512, model=DEFAULT_MODEL)
    with running(gateway_proc, upstream):
        client = openai.OpenAI(base_url=gateway_proc.url, api_key="unused", max_retries=0,
                               timeout=300)
        conversation = to_openai(sample_conversation(25, seed=1, tool_every=0))
        raw = client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=conversation, max_tokens=8, temperature=0)
        reply = raw.parse()
        assert reply.usage.model_extra["trimmed_messages"] > 0
        assert reply.usage.prompt_tokens == int(raw.headers["x-contextwindow-prompt-tokens"])
        assert reply.usage.prompt_tokens <= 512 - 8
        assert reply.choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8,
            temperature=0, stream=True, extra_headers={"X-Session-Id": "e2e"}))
        assert history(gateway_proc, "e2e") == [("user", "Say hi."), ("assistant", streamed)]


def test_tool_definitions_count_against_the_window(client: openai.OpenAI, fake: Proc) -> None:
    tools = [{"type": "function", "function": {
        "name": "lookup", "description": "Look a booking up " + "in detail " * 10,
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}]
    conversation = to_openai(sample_conversation(30, seed=5, tool_every=0))
    counter = TokenCounter.for_model(FAKE_MODEL)
    raw = client.chat.completions.with_raw_response.create(
        model=FAKE_MODEL, messages=conversation, max_tokens=40, tools=tools)
    forwarded = sent(fake)[-1]
    assert forwarded["tools"] == tools
    expected = trim(as_messages(conversation), CONTEXT - 40, counter, tools=tools,
                    cache_policy=CUT)
    assert forwarded["messages"] == to_openai(expected)
    assert raw.headers["x-contextwindow-prompt-tokens"] == str(
        counter.count_messages(expected, tools))
