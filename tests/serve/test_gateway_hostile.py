"""Hostile input against a running gateway process: every answer is a 4xx with a clear message
or a valid completion, never a 5xx, and the process stays up.

Generated requests (hypothesis, derandomized, bounded) mix well-formed chat requests with wrong
types, unknown roles, odd session ids and keys; hand-written ones cover what generation rarely
finds: deep nesting, huge bodies, a body that never ends, a flood of large messages. The same
guard runs in front of the local model: the last test drives it in process with the tiny model.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateway_fake import FAKE_MODEL, Proc, running, start_fake, start_gateway

from contextwindow.generation import Generator
from contextwindow.serve import BackgroundServer, Limits, create_app

KEY = "hostile-suite-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    fake = start_fake()
    db = tmp_path_factory.mktemp("hostile") / "sessions.db"
    proc = start_gateway(fake.url, "--store", str(db), "--api-key-env", "HOSTILE_KEY",
                         "--max-body-bytes", "262144", "--request-timeout", "10",
                         env={"HOSTILE_KEY": KEY}, context=1024)
    with running(proc, fake):
        yield proc
    log = proc.stop()
    assert "Traceback" not in log and "unexpected error" not in log
    assert KEY not in log


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
parts = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"])},
                                       optional={"text": st.text(max_size=40) | json_values}),
                 max_size=3)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function",
                              "bogus"]) | json_values,
     "content": st.text(max_size=200) | parts | json_values},
    optional={"name": st.text(max_size=10) | json_values,
              "tool_call_id": st.text(max_size=10) | json_values,
              "tool_calls": st.lists(st.fixed_dictionaries(
                  {"id": st.text(max_size=6), "type": st.just("function"),
                   "function": st.fixed_dictionaries({"name": st.text(max_size=6),
                                                      "arguments": st.text(max_size=20)})}),
                  max_size=2) | json_values})
requests = st.fixed_dictionaries(
    {"model": st.just(FAKE_MODEL) | json_values,
     "messages": st.lists(messages, min_size=1, max_size=4) | json_values},
    optional={"max_tokens": st.integers(-5, 5000) | json_values,
              "max_completion_tokens": st.integers(-5, 5000) | json_values,
              "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
              "top_p": st.floats(-1, 2, allow_nan=False) | json_values,
              "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6)
              | json_values,
              "stream": st.booleans() | json_values,
              "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})
              | json_values,
              "seed": st.integers() | json_values,
              "n": st.integers(-1, 3) | json_values})
header_text = st.text(alphabet=string.printable.strip() + " ", max_size=140).map(str.strip)
bodies = (requests.map(lambda r: json.dumps(r).encode()) | json_values.map(
    lambda v: json.dumps(v).encode()) | st.binary(max_size=200))


def check_answer(reply: httpx.Response) -> None:
    """A valid completion (plain or streamed), or a 4xx in OpenAI's error shape."""
    if reply.status_code == 200:
        if reply.headers["content-type"].startswith("text/event-stream"):
            events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            for event in events[:-1]:
                assert json.loads(event)["object"] == "chat.completion.chunk"
        else:
            assert isinstance(reply.json()["choices"][0]["message"]["content"], str)
        return
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies, session=st.none() | header_text, key=st.sampled_from([KEY, KEY, None, "x"]),
       path=st.sampled_from(["/v1/chat/completions"] * 4 + ["/v1/models", "/v1/sessions/abc"]))
def test_generated_requests_never_get_a_5xx(gateway: Proc, body: bytes, session: str | None,
                                            key: str | None, path: str) -> None:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if session is not None:
        headers["X-Session-Id"] = session
    with httpx.Client(timeout=30) as client:
        reply = client.post(f"{gateway.root}{path}", content=body, headers=headers)
    if path == "/v1/chat/completions" or reply.status_code >= 400:
        check_answer(reply)


def test_hand_written_hostile_requests(gateway: Proc) -> None:
    url = f"{gateway.url}/chat/completions"
    hostile = [
        b"[" * 200_000, b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        json.dumps({"model": FAKE_MODEL, "messages": [{"role": "user",
                                                       "content": "\ud800 lone"}]}).encode(),
        json.dumps({"model": FAKE_MODEL, "messages": [{"role": "user",
                                                       "content": "y" * 200_000}]}).encode(),
        json.dumps({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 10**18}).encode(),
        b"\x00" * 1000, "{\"model\": \"\u2028\"}".encode(),
    ]
    for body in hostile:
        check_answer(httpx.post(url, content=body, headers=AUTH, timeout=30))
    big = httpx.post(url, content=b" " * 300_000, headers=AUTH)
    assert big.status_code == 413
    for sid in ("../../etc/passwd", "'; DROP TABLE messages; --", "*", "a" * 500):
        reply = httpx.get(f"{gateway.url}/sessions/{sid}", headers=AUTH)
        assert reply.status_code in (400, 404), reply.text
    assert httpx.get(f"{gateway.url}/sessions/abc").status_code == 401


def test_a_flood_of_large_requests_leaves_it_serving(gateway: Proc) -> None:
    body = json.dumps({"model": FAKE_MODEL, "messages": [
        {"role": "user", "content": "z" * 200_000}]}).encode()
    statuses: list[int] = []

    def send() -> None:
        statuses.append(httpx.post(f"{gateway.url}/chat/completions", content=body,
                                   headers=AUTH, timeout=60).status_code)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [400] * 16  # refused by the cheap bound, uncounted
    assert gateway.alive()
    ok = httpx.post(f"{gateway.url}/chat/completions", headers=AUTH, json={
        "model": FAKE_MODEL, "messages": [{"role": "user", "content": "still there?"}]})
    assert ok.json()["choices"][0]["message"]["content"] == "echo: still there?"


def test_the_guard_protects_the_local_model_too(tiny_generator_app: Any) -> None:
    root = tiny_generator_app.root
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{root}/v1/chat/completions", json=body).status_code == 401
    assert httpx.post(f"{root}/v1/chat/completions", headers=AUTH,
                      content=b"[" * 50_000).status_code == 400
    assert httpx.post(f"{root}/v1/chat/completions", headers=AUTH,
                      content=b" " * 70_000).status_code == 413
    reply = httpx.post(f"{root}/v1/chat/completions", headers={**AUTH, "X-Session-Id": "t1"},
                       json=body, timeout=60)
    assert reply.status_code == 200
    turns = httpx.get(f"{root}/v1/sessions/t1", headers=AUTH).json()["messages"]
    assert [m["role"] for m in turns] == ["user", "assistant"]
    assert turns[1]["content"] == reply.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def tiny_generator_app() -> Iterator[BackgroundServer]:
    from test_serve import build_tiny_chat_model

    from contextwindow.stores import InMemoryStore

    model, tokenizer = build_tiny_chat_model()
    generator = Generator(model, tokenizer, model_id="tiny", context=256)
    app = create_app(generator, store=InMemoryStore(),
                     limits=Limits(api_key=KEY, max_body_bytes=65536))
    with BackgroundServer(app) as server:
        yield server
