"""The llama.cpp engine (``--engine llama.cpp``) on the real SmolLM2 GGUF, in-process.

llama.cpp must evaluate exactly the prompt ids our fit produced, decode greedily what
llama.cpp's own completion API decodes, reuse the previous request's prefix (measured), repeat
a seeded sample, and serve ``chat`` (the turn stored with its reply) and ``serve`` (an OpenAI
request answered with llama.cpp's own prompt-token count, ``llamacpp.prompt_counts``). Needs
the ``llamacpp`` extra in this venv (a missing one fails, naming the extra) and, for the count,
``.venv-llama`` as the gateway tests do.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path
from typing import Any

import httpx
import pytest
from llamacpp import GGUF, prompt_counts
from test_gateway_fake import CLI, Proc, free_port, running

from contextwindow.cli import main
from contextwindow.generation import LlamaCppGenerator, SamplingParams
from contextwindow.generation.engine import EngineSummarizer
from contextwindow.stores import SQLiteStore
from contextwindow.summarize.prompt import render_transcript
from contextwindow.templates import chat_template_ids

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
CONTEXT = 512
REPLY = 8
GREEDY = SamplingParams(max_tokens=REPLY, temperature=0)
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine() -> LlamaCppGenerator:
    return LlamaCppGenerator.load(MODEL, context=CONTEXT, threads=1)


def long_conversation(turns: int = 40) -> list[dict[str, str]]:
    """More turns than the window holds, so the fit has to trim."""
    messages = [{"role": "system", "content": "Answer briefly."}]
    for turn in range(turns):
        messages += [{"role": "user", "content": f"Question {turn}: what comes after {turn}?"},
                     {"role": "assistant", "content": f"{turn + 1} comes after {turn}."}]
    return [*messages, {"role": "user", "content": "And after 41?"}]


def kept(engine: LlamaCppGenerator, count: int) -> list[int]:
    """The first ``count`` token ids in llama.cpp's KV cache, by llama.cpp's own record."""
    return [int(t) for t in engine.llama.input_ids[:count]]


def common_prefix(a: list[int], b: list[int]) -> int:
    return sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(a, b)))


def test_llamacpp_evaluates_exactly_the_prompt_our_fit_produced(
        engine: LlamaCppGenerator) -> None:
    fit = engine.fit(long_conversation(), REPLY)
    assert fit.trimmed_messages > 0 and fit.prompt_tokens <= CONTEXT - REPLY
    completion = engine.generate(fit, GREEDY)
    assert kept(engine, fit.prompt_tokens) == fit.prompt_ids
    # what it holds after the reply: the prompt, then every reply token but the last
    assert engine.llama.n_tokens == completion.kv_cache_tokens
    assert kept(engine, completion.kv_cache_tokens) == (
        fit.prompt_ids + completion.token_ids[:-1])


def test_a_greedy_reply_is_the_one_llamacpps_own_completion_gives(
        engine: LlamaCppGenerator) -> None:
    fit = engine.fit(QUESTION, REPLY)
    pieces: list[str] = []
    completion = engine.generate(fit, GREEDY, on_text=pieces.append)
    own = engine.llama.create_completion(prompt=fit.prompt_ids, temperature=0,
                                         max_tokens=REPLY)
    assert completion.text == own["choices"][0]["text"]
    assert "".join(pieces) == completion.text  # streamed whole
    # our count includes the end-of-generation token, as the transformers engine's does
    ended = completion.token_ids[-1] in engine.eos_ids
    assert (completion.completion_tokens - ended, completion.finish_reason) == (
        own["usage"]["completion_tokens"], own["choices"][0]["finish_reason"])


def test_the_next_turn_reuses_the_prefix_llamacpp_still_holds(
        engine: LlamaCppGenerator) -> None:
    first = engine.fit(QUESTION, REPLY)
    reply = engine.generate(first, GREEDY)
    held = first.prompt_ids + reply.token_ids[:-1]
    second = engine.fit([*QUESTION, {"role": "assistant", "content": reply.text},
                         {"role": "user", "content": "And of Spain?"}], REPLY)
    common = common_prefix(held, second.prompt_ids)
    assert common > first.prompt_tokens  # the first turn and its reply are a prefix
    assert engine.generate(second, GREEDY).cached_tokens == min(common,
                                                                second.prompt_tokens - 2)
    assert kept(engine, second.prompt_tokens) == second.prompt_ids
    other = engine.fit([{"role": "user", "content": "Name a colour."}], REPLY)
    shared = common_prefix(kept(engine, second.prompt_tokens), other.prompt_ids)
    assert 0 < shared < other.prompt_tokens  # the template's default system prompt
    assert engine.generate(other, GREEDY).cached_tokens == shared


def test_a_seed_repeats_a_sample_and_a_stop_string_ends_it(
        engine: LlamaCppGenerator) -> None:
    fit = engine.fit(QUESTION, 24)
    other = engine.fit([{"role": "user", "content": "Name a colour."}], 24)
    for seed in range(4):  # fresh, the same request again, after another one
        seeded = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.9, seed=seed)
        engine.llama.reset()
        fresh = engine.generate(fit, seeded).token_ids
        again = engine.generate(fit, seeded).token_ids
        engine.generate(other, seeded)
        assert (again, engine.generate(fit, seeded).token_ids) == (fresh, fresh), seed
    whole = engine.generate(fit, SamplingParams(max_tokens=24, temperature=0))
    stop = next(ch for ch in whole.text[1:] if not ch.isalnum() and not ch.isspace())
    cut = engine.generate(fit, SamplingParams(max_tokens=24, temperature=0, stop=(stop,)))
    assert (cut.text, cut.finish_reason) == (whole.text[:whole.text.index(stop, 1)], "stop")


def test_the_summarizer_writes_with_llamacpp(engine: LlamaCppGenerator) -> None:
    from contextwindow.messages import Message

    summarizer = engine.summarizer()
    assert isinstance(summarizer, EngineSummarizer)
    messages = [Message(role="user", content="My name is Ada and I live in Leeds."),
                Message(role="assistant", content="Nice to meet you, Ada.")]
    summary = summarizer.summarize(None, messages)
    assert summary.strip()
    prompt = chat_template_ids(engine.tokenizer,
                               summarizer._chat(None, render_transcript(messages)))
    assert kept(engine, len(prompt)) == prompt  # the summary prompt is what llama.cpp read


def test_chat_on_llamacpp_stores_the_turn_with_its_reply(
        engine: LlamaCppGenerator, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "chat.sqlite3"
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n"))
    code = main(["chat", "--engine", "llama.cpp", "--model", MODEL, "--store", str(db),
                 "--session", "s1", "--temperature", "0", "--reply-tokens", str(REPLY),
                 "--context", str(CONTEXT), "--max-tokens", "200", "--threads", "1",
                 "--system", "You are a helpful assistant."])
    out, err = capsys.readouterr()
    assert code == 0, err
    store = SQLiteStore(db)
    history = store.load("s1")
    store.close()
    assert [(m.role, m.content) for m in history[:2]] == [(m["role"], m["content"])
                                                          for m in QUESTION]
    _, expected = engine.chat(QUESTION, GREEDY)
    assert [m.role for m in history] == ["system", "user", "assistant"]
    assert history[2].content == expected.text
    assert out == f"{expected.text}\n"
    assert f"model {MODEL} on llama.cpp (window {CONTEXT} tokens)" in " ".join(err.split())


def test_an_expressible_rope_reaches_llamacpps_context() -> None:
    scaled = LlamaCppGenerator.load(MODEL, rope="yarn", rope_factor=2, context=1024, threads=1)
    params = scaled.llama.context_params
    assert (params.rope_scaling_type, params.rope_freq_scale, params.rope_freq_base,
            params.yarn_orig_ctx) == (2, 0.5, 100000.0, 8192)
    fit, completion = scaled.chat(QUESTION, GREEDY)
    assert kept(scaled, fit.prompt_tokens) == fit.prompt_ids and completion.text


@pytest.fixture(scope="module")
def server() -> Iterator[Proc]:
    port = free_port()
    proc = Proc([*CLI, "serve", "--engine", "llama.cpp", "--model", MODEL, "--port", str(port),
                 "--store", "none", "--context", str(CONTEXT), "--threads", "1",
                 "--log-level", "warning"], port).ready(timeout=300)
    with running(proc):
        yield proc


def test_serve_on_llamacpp_answers_with_llamacpps_own_prompt_count(
        server: Proc, engine: LlamaCppGenerator) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "max_tokens": REPLY,
                            "temperature": 0}
    reply = httpx.post(f"{server.url}/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    _, expected = engine.chat(QUESTION, GREEDY)
    assert answer["choices"][0]["message"]["content"] == expected.text
    assert answer["usage"]["prompt_tokens"] == prompt_counts(GGUF, [body])[0]
    assert answer["usage"]["completion_tokens"] == expected.completion_tokens
    assert answer["usage"]["context_window"] == CONTEXT
    card = httpx.get(f"{server.url}/models", timeout=30).json()["data"][0]
    assert card["engine"] == "llama.cpp" and card["context_window"] == CONTEXT
    # streamed: the same text in deltas, and the same usage
    streamed = httpx.post(f"{server.url}/chat/completions", timeout=300, json={
        **body, "stream": True, "stream_options": {"include_usage": True}})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == expected.text
    assert events[-1]["usage"]["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    # the same request again reuses all but the last two prompt tokens
    again = httpx.post(f"{server.url}/chat/completions", json=body, timeout=300).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == (
        answer["usage"]["prompt_tokens"] - 2)
    assert again["choices"][0]["message"]["content"] == expected.text
