"""The gateway's answers to what real engines do, each against the fake upstream.

llama.cpp's server cuts a stream short when another request arrives (``[DONE]`` or the end of
the body before any ``finish_reason``), sends no usage chunk, answers 500 to ``developer``
messages and content-part lists, and runs more requests than a gateway's ``--max-queue``; the
fake of ``test_gateway_fake.py`` does each of these on demand. ``test_llamacpp.py`` repeats the
checks in front of the real engine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from test_gateway_fake import CLI, FAKE_MODEL, Proc, running, start_fake, start_gateway
from transformers import AutoTokenizer

from contextwindow.errors import ConfigError
from contextwindow.messages import Message, ToolCall
from contextwindow.models.loading import part_paths
from contextwindow.models.registry import MODELS
from contextwindow.serve import create_gateway
from contextwindow.serve.upstream import flattened
from contextwindow.tokens import TokenCounter

CONTEXT = 2048
COUNTER = TokenCounter.for_model(FAKE_MODEL)


@pytest.fixture(scope="module")
def gateway(fake: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    db = tmp_path_factory.mktemp("defects") / "sessions.db"
    proc = start_gateway(fake.url, "--store", str(db), "--max-queue", "2", "--flatten",
                         context=CONTEXT)
    with running(proc):
        yield proc


def stream(gateway: Proc, content: str, *, sid: str | None = None,
           usage: bool = False) -> tuple[httpx.Response, list[str]]:
    """A streamed request: the response and its ``data:`` payloads."""
    body: dict[str, Any] = {"model": FAKE_MODEL, "stream": True,
                            "messages": [{"role": "user", "content": content}]}
    if usage:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Session-Id": sid} if sid else {}
    reply = httpx.post(f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=30)
    return reply, [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]


def stored(gateway: Proc, sid: str) -> list[Any]:
    return httpx.get(f"{gateway.url}/sessions/{sid}").json()["messages"]


@pytest.mark.parametrize("how", ["__cut", "__eof"])
def test_a_stream_cut_short_ends_in_an_error_not_done(gateway: Proc, how: str) -> None:
    sid = f"cut-{how.strip('_')}"
    assert stream(gateway, "first", sid=sid)[1][-1] == "[DONE]"
    reply, events = stream(gateway, how, sid=sid)
    assert reply.status_code == 200
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_incomplete")
    assert [json.loads(e)["choices"][0]["delta"] for e in events[:-1]] == [
        {"role": "assistant", "content": ""}, {"content": "echo: "}, {"content": f"{how} "}]
    assert [(m["role"], m["content"]) for m in stored(gateway, sid)] == [
        ("user", "first"), ("assistant", "echo: first ")]


def test_usage_is_added_when_the_upstream_sends_none(gateway: Proc) -> None:
    reply, events = stream(gateway, "__nousage", usage=True)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    prompt = int(reply.headers["X-Contextwindow-Prompt-Tokens"])
    assert prompt == COUNTER.count_messages([{"role": "user", "content": "__nousage"}])
    completion = COUNTER.count_text("echo: __nousage ")
    assert last["choices"] == [] and last["model"] == FAKE_MODEL
    assert last["id"] == "chatcmpl-fake"
    assert last["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion, "trimmed_tokens": 0,
                             "trimmed_messages": 0, "context_window": CONTEXT}


def test_the_upstreams_own_usage_is_not_doubled(gateway: Proc) -> None:
    _, events = stream(gateway, "hello", usage=True)
    usages = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    assert len(usages) == 1 and usages[0]["prompt_tokens"] == 1  # the fake's message count


def test_no_usage_chunk_unless_asked(gateway: Proc) -> None:
    _, events = stream(gateway, "__nousage")
    assert not any(json.loads(e).get("usage") for e in events[:-1])


def test_flatten_sends_what_was_counted(gateway: Proc, fake: Proc) -> None:
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "first"},
                                             {"type": "text", "text": "second"}]}]
    reply = httpx.post(f"{gateway.url}/chat/completions",
                       json={"model": FAKE_MODEL, "messages": messages})
    assert reply.status_code == 200
    sent = httpx.get(f"{fake.root}/debug").json()["requests"][-1]["messages"]
    assert sent == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "first\nsecond"}]
    counted = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "first\nsecond"}]
    assert int(reply.headers["X-Contextwindow-Prompt-Tokens"]) == COUNTER.count_messages(counted)


def test_flatten_sends_a_null_content_as_empty_text() -> None:
    """An assistant's tool calls come with ``content: null`` (OpenAI's shape); llama.cpp's
    server answers that with 500, and the counter priced it as ""."""
    calls = Message(role="assistant", tool_calls=(ToolCall(id="c1", name="f", arguments="{}"),))
    assert flattened(calls).to_openai() == {**calls.to_openai(), "content": ""}
    plain = Message(role="user", content="hi")
    assert flattened(plain) is plain


def test_without_flatten_messages_go_as_given(fake: Proc) -> None:
    app = create_gateway(fake.url, model=FAKE_MODEL, context=CONTEXT)
    assert app.state.api.backend.flatten is False  # tiktoken's count: an OpenAI upstream
    gguf = create_gateway(fake.url, model="smollm2", context=CONTEXT,
                          tokenizer=str(part_paths(MODELS["smollm2-135m"])[0]))
    assert gguf.state.api.backend.flatten is True  # a chat template: an open-weights engine


def test_max_queue_bounds_requests_in_flight(gateway: Proc) -> None:
    body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "__slow:1.5"}]}
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{gateway.url}/chat/completions",
                                                     json=body, timeout=30), range(6)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 503, 503, 503, 503]
    refused = next(r for r in replies if r.status_code == 503)
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert refused.headers["retry-after"] == "1"
    assert httpx.get(f"{gateway.root}/health").json()["in_flight"] == 0


def test_health_reports_the_upstream_and_failures_are_logged() -> None:
    fake = start_fake()
    gateway = start_gateway(fake.url, "--store", "none")
    with running(gateway, fake):
        assert httpx.get(f"{gateway.root}/health").status_code == 200
        fake.kill()
        down = httpx.get(f"{gateway.root}/health")
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "upstream_unavailable"
        failed = httpx.post(f"{gateway.url}/chat/completions", json={
            "model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert failed.status_code == 502
        log = gateway.stop()
    assert "upstream_unavailable cannot reach the upstream" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("tokenizer", ["smollm2-135m", "gguf"])
def test_tokenizer_from_a_registry_name_or_a_gguf(fake: Proc, tokenizer: str) -> None:
    source = str(part_paths(MODELS["smollm2-135m"])[0]) if tokenizer == "gguf" else tokenizer
    app = create_gateway(fake.url, model="smollm2", context=CONTEXT, tokenizer=source)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    gguf = part_paths(MODELS["smollm2-135m"])[0]
    template = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    expected = len(template.apply_chat_template(messages, tokenize=True,
                                                add_generation_prompt=True, return_dict=False))
    assert app.state.api.backend.counter.count_messages(messages) == expected == 16


def serve_error(*args: str) -> str:
    done = subprocess.run([*CLI, "serve", "--upstream", "http://127.0.0.1:9/v1",
                           "--upstream-context", "512", "--store", "none", *args],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


def test_a_bad_tokenizer_is_one_line_and_asks_no_hub() -> None:
    error = serve_error("--upstream-model", "m", "--tokenizer", "HuggingFaceTB/SmolLM2-135M")
    assert "--tokenizer HuggingFaceTB/SmolLM2-135M: not a tokenizer directory, a .gguf file " \
        "or a registered model" in error
    assert "huggingface.co" not in error


def test_no_tokenizer_for_an_unknown_model_asks_for_one() -> None:
    error = serve_error("--upstream-model", "smollm2")
    assert "pass --tokenizer" in error and "--encoding" not in error
    with pytest.raises(ConfigError, match="pass --tokenizer"):
        create_gateway("http://127.0.0.1:9/v1", model="smollm2", context=CONTEXT)
