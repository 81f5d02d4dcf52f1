"""The OpenAI-compatible server, driven by the official openai client over real HTTP.

Most tests use a tiny random-init Llama that shares SmolLM2's vocabulary (so the real tokenizer
and chat template apply) and a 256-token window, so trimming and the sink cache kick in at small
sizes. One class runs the real SmolLM2 model. Every expected value is computed independently
(a plain dense forward, ``trim`` with the template counter), never read back from the server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fastapi  # noqa: F401 (the serve extra: missing it is a failure, not a skip)
import httpx
import openai
import pytest

from contextwindow.generation import Generator, SamplingParams
from contextwindow.messages import to_openai
from contextwindow.samples import sample_conversation
from contextwindow.serve import (
    TRIMMED_MESSAGES_HEADER,
    TRIMMED_TOKENS_HEADER,
    BackgroundServer,
    create_app,
)
from contextwindow.trim import trim

CONTEXT = 256
MODEL_ID = "tiny"


def build_tiny_chat_model(seed: int = 0) -> tuple[Any, Any]:
    """:func:`conftest.make_tiny_chat_llama` and the real SmolLM2 tokenizer."""
    from conftest import make_tiny_chat_llama
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    return make_tiny_chat_llama(seed), AutoTokenizer.from_pretrained(resolve())


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_chat_model()


def start(generator: Generator, **options: Any) -> tuple[BackgroundServer, Any]:
    app = create_app(generator, **options)
    return BackgroundServer(app).start(), app


@pytest.fixture(scope="module")
def server(tiny: tuple[Any, Any]) -> Any:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=CONTEXT)
    srv, app = start(generator, default_max_tokens=16)
    srv.generator, srv.app = generator, app
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def template_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt the chat template gives (a tool-call message's null content renders as "")."""
    messages = [{**m, "content": m.get("content") or ""} for m in messages]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def greedy_reference(model: Any, tokenizer: Any, messages: list[dict[str, Any]], n: int) -> str:
    """Greedy decoding with a full dense forward per step (no cache at all)."""
    import torch

    ids = template_ids(tokenizer, messages)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(torch.argmax(logits))
            out.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(out, skip_special_tokens=True)


USER = [{"role": "user", "content": "Tell me about the garden shed."}]


def long_conversation(turns: int = 30) -> list[dict[str, Any]]:
    conversation = to_openai(sample_conversation(turns, seed=3))
    return conversation + [{"role": "user", "content": "And what about the budget?"}]


# -- basics -----------------------------------------------------------------------------------
def test_models_endpoint(client: Any, server: Any) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    card = httpx.get(f"{server.url}/models/{MODEL_ID}").json()
    assert card["id"] == MODEL_ID and card["context_window"] == CONTEXT
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert info.value.body["code"] == "model_not_found"


def test_completion_is_the_greedy_continuation(client: Any, tiny: Any) -> None:
    model, tokenizer = tiny
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL_ID, messages=USER, max_tokens=12, temperature=0)
    response = raw.parse()
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == greedy_reference(model, tokenizer, USER, 12)
    assert choice.finish_reason == "length"
    assert response.object == "chat.completion" and response.model == MODEL_ID
    usage = response.usage
    assert usage.prompt_tokens == len(template_ids(tokenizer, USER))
    assert usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert usage.model_extra["trimmed_tokens"] == 0
    assert usage.model_extra["trimmed_messages"] == 0
    assert raw.headers[TRIMMED_TOKENS_HEADER] == "0"
    assert raw.headers[TRIMMED_MESSAGES_HEADER] == "0"


def test_max_completion_tokens_and_default(client: Any) -> None:
    five = client.chat.completions.create(model=MODEL_ID, messages=USER,
                                          max_completion_tokens=5, temperature=0)
    assert five.usage.completion_tokens == 5
    default = client.chat.completions.create(model=MODEL_ID, messages=USER, temperature=0)
    assert default.usage.completion_tokens == 16  # the server's default_max_tokens
    assert default.choices[0].message.content.startswith(five.choices[0].message.content)


def test_streaming_matches_non_streaming(client: Any) -> None:
    plain = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=12,
                                           temperature=0)
    chunks = list(client.chat.completions.create(
        model=MODEL_ID, messages=USER, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_raw_sse_framing(server: Any) -> None:
    body = {"model": MODEL_ID, "messages": USER, "max_tokens": 4, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers[TRIMMED_TOKENS_HEADER] == "0"
        events = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(line[6:]) for line in events[:-1]]
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in payloads[-1]  # only with stream_options.include_usage


# -- fitting to the window --------------------------------------------------------------------
def test_overlong_conversation_is_trimmed_exactly(client: Any, server: Any, tiny: Any) -> None:
    model, tokenizer = tiny
    conversation = long_conversation()
    counter = server.generator.counter
    budget = CONTEXT - 16
    expected = trim(conversation, budget, counter, cache_policy=server.generator.cache_policy)
    assert len(expected) < len(conversation)  # the test needs real trimming
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL_ID, messages=conversation, max_tokens=16, temperature=0)
    response = raw.parse()
    usage = response.usage
    prompt = len(template_ids(tokenizer, expected))
    assert usage.prompt_tokens == prompt == counter.count_messages(expected)
    assert prompt <= budget
    trimmed_tokens = counter.count_messages(conversation) - prompt
    assert usage.model_extra["trimmed_tokens"] == trimmed_tokens > 0
    assert usage.model_extra["trimmed_messages"] == len(conversation) - len(expected)
    assert raw.headers[TRIMMED_TOKENS_HEADER] == str(trimmed_tokens)
    assert raw.headers[TRIMMED_MESSAGES_HEADER] == str(len(conversation) - len(expected))
    # The model saw exactly the trimmed conversation.
    direct = client.chat.completions.create(model=MODEL_ID, messages=expected, max_tokens=16,
                                            temperature=0)
    assert direct.usage.model_extra["trimmed_tokens"] == 0
    assert response.choices[0].message.content == direct.choices[0].message.content
    assert response.choices[0].message.content == greedy_reference(model, tokenizer, expected, 16)


def test_sinks_policy_pins_the_first_messages(tiny: Any) -> None:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=CONTEXT, policy="sinks")
    conversation = long_conversation()
    expected = trim(conversation, CONTEXT - 16, generator.counter, keep_first=2,
                    cache_policy=generator.cache_policy)
    assert expected[:3] == conversation[:3]  # system + the first two messages
    with BackgroundServer(create_app(generator)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
        response = client.chat.completions.create(model=MODEL_ID, messages=conversation,
                                                  max_tokens=16, temperature=0)
    assert response.usage.prompt_tokens == len(template_ids(tokenizer, expected))
    assert response.usage.model_extra["trimmed_messages"] == len(conversation) - len(expected)


def test_without_trimming_an_overlong_prompt_is_a_clean_400(tiny: Any) -> None:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=CONTEXT, policy="none")
    conversation = long_conversation()
    with BackgroundServer(create_app(generator)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=MODEL_ID, messages=conversation,
                                           max_tokens=16)
        short = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=3)
    error = info.value.body
    assert info.value.status_code == 400
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert error["type"] == "invalid_request_error"
    assert f"maximum context length is {CONTEXT} tokens" in error["message"]
    assert str(generator.counter.count_messages(conversation)) in error["message"]
    assert short.usage.completion_tokens == 3


def test_a_turn_too_big_for_the_window_is_a_clean_400(client: Any) -> None:
    huge = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_ID, messages=huge, max_tokens=8)
    assert info.value.body["code"] == "context_length_exceeded"


def test_long_reply_stays_inside_the_sink_cache(client: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    response = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=300,
                                              temperature=0)
    usage = response.usage
    prompt = len(template_ids(tokenizer, USER))
    assert usage.completion_tokens == 300  # longer than the 256-token window
    assert usage.model_extra["kv_cache_tokens"] == CONTEXT
    # Every token but the last is fed to the model; all beyond the window were evicted.
    assert usage.model_extra["kv_evicted_tokens"] == prompt + 300 - 1 - CONTEXT
    assert response.choices[0].finish_reason == "length"


def test_dense_cache_refuses_a_reply_longer_than_the_window(tiny: Any) -> None:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=CONTEXT,
                          sink_cache=False)
    with BackgroundServer(create_app(generator)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=300)
        ok = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=20,
                                            temperature=0)
    assert info.value.body["code"] == "context_length_exceeded"
    assert ok.usage.model_extra["kv_cache_tokens"] == ok.usage.prompt_tokens + 19
    assert ok.usage.model_extra["kv_evicted_tokens"] == 0


# -- sampling controls ------------------------------------------------------------------------
def test_stop_strings_cut_the_reply(client: Any) -> None:
    full = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=24,
                                          temperature=0).choices[0].message.content
    middle = len(full) // 2
    stop = full[middle:middle + 3]
    expected = full[:full.find(stop)]
    assert 0 < len(expected) < len(full)
    cut = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=24,
                                         temperature=0, stop=[stop, "\x00never"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 24
    streamed = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=24,
                                              temperature=0, stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: Any) -> None:
    def sample(seed: int, **extra: Any) -> str:
        return client.chat.completions.create(
            model=MODEL_ID, messages=USER, max_tokens=10, temperature=1.0, seed=seed,
            **extra).choices[0].message.content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert sample(7, top_p=0.5) == sample(7, top_p=0.5)
    greedy = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=10,
                                            temperature=0).choices[0].message.content
    assert sample(7) != greedy


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_clients_get_their_own_answers(client: Any) -> None:
    prompts = [[{"role": "user", "content": f"Question number {k}: what is {k} plus {k}?"}]
               for k in range(4)]

    def ask(messages: list[dict[str, Any]], stream: bool) -> str:
        if stream:
            chunks = client.chat.completions.create(model=MODEL_ID, messages=messages,
                                                    max_tokens=10, temperature=0, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=10,
                                              temperature=0).choices[0].message.content

    alone = [ask(p, False) for p in prompts]
    assert len(set(alone)) == 4  # different prompts, different answers
    jobs = [(k, stream) for k in range(4) for stream in (False, True)]
    barrier = threading.Barrier(len(jobs))

    def run(job: tuple[int, bool]) -> str:
        barrier.wait()
        return ask(prompts[job[0]], job[1])

    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(run, jobs))
    assert together == [alone[k] for k, _ in jobs]


def test_a_client_that_leaves_cancels_its_generation(server: Any) -> None:
    stats = server.app.state.worker.stats
    before = stats["cancelled"]
    body = {"model": MODEL_ID, "messages": USER, "max_tokens": 1_000_000, "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=60) as r:
        for seen, _ in enumerate(line for line in r.iter_lines() if line):
            if seen == 3:
                break
    deadline = time.monotonic() + 60
    while stats["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats["cancelled"] == before + 1


# -- bad requests -----------------------------------------------------------------------------
def post(server: Any, body: Any, *, raw: bool = False) -> httpx.Response:
    if raw:
        return httpx.post(f"{server.url}/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str | None,
                 param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"model": "tiny",'])
def test_malformed_json_is_400(server: Any, body: bytes) -> None:
    error = assert_error(post(server, body, raw=True), 400, "invalid_json", None)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "code", "param"), [
    ([1, 2], "invalid_type", None),
    ({"messages": USER}, "missing_required_parameter", "model"),
    ({"model": MODEL_ID}, "missing_required_parameter", "messages"),
    ({"model": MODEL_ID, "messages": []}, "empty_array", "messages"),
    ({"model": MODEL_ID, "messages": "hi"}, "invalid_type", "messages"),
    ({"model": MODEL_ID, "messages": [{"role": "robot", "content": "hi"}]}, "invalid_value",
     "messages"),
    ({"model": MODEL_ID, "messages": [{"content": "hi"}]}, "invalid_value", "messages"),
    ({"model": MODEL_ID, "messages": [{"role": "user", "content": 5}]}, "invalid_value",
     "messages"),
    ({"model": MODEL_ID, "messages": [{"role": "tool", "content": "x"}]}, "invalid_value",
     "messages"),
    ({"model": MODEL_ID, "messages": [{"role": "user", "content": [{"type": "image_url",
      "image_url": {"url": "https://example.org/a.png"}}]}]}, "invalid_value", "messages"),
    ({"model": MODEL_ID, "messages": USER, "max_tokens": 0}, "invalid_value", "max_tokens"),
    ({"model": MODEL_ID, "messages": USER, "max_tokens": "9"}, "invalid_value", "max_tokens"),
    ({"model": MODEL_ID, "messages": USER, "max_completion_tokens": -1}, "invalid_value",
     "max_completion_tokens"),
    ({"model": MODEL_ID, "messages": USER, "temperature": 2.5}, "invalid_value", "temperature"),
    ({"model": MODEL_ID, "messages": USER, "top_p": 1.5}, "invalid_value", "top_p"),
    ({"model": MODEL_ID, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "invalid_value",
     "stop"),
    ({"model": MODEL_ID, "messages": USER, "stop": 3}, "invalid_type", "stop"),
    ({"model": MODEL_ID, "messages": USER, "seed": 1.5}, "invalid_type", "seed"),
    ({"model": MODEL_ID, "messages": USER, "n": 2}, "unsupported_value", "n"),
    ({"model": MODEL_ID, "messages": USER, "stream": "yes"}, "invalid_type", "stream"),
    ({"model": MODEL_ID, "messages": USER, "stream_options": {"include_usage": True}},
     "invalid_value", "stream_options"),
    ({"model": MODEL_ID, "messages": USER, "frobnicate": 1}, "unknown_parameter", "frobnicate"),
    ({"model": MODEL_ID, "messages": USER, "tools": [{"type": "function",
                                                      "function": {"name": "f"}}]},
     "unsupported_parameter", "tools"),
])
def test_bad_fields_are_400(server: Any, body: Any, code: str, param: str | None) -> None:
    assert_error(post(server, body), 400, code, param)


def test_unknown_model_and_path_are_404(server: Any, client: Any) -> None:
    assert_error(post(server, {"model": "gpt-4o", "messages": USER}), 404, "model_not_found",
                 "model")
    assert_error(httpx.get(f"{server.root}/v1/nothing-here"), 404, "not_found", None)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=USER)


def test_openai_client_surfaces_400_for_invalid_roles(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL_ID,
                                       messages=[{"role": "wizard", "content": "hi"}])
    assert "unknown role 'wizard'" in info.value.body["message"]


def test_accepted_but_ignored_fields_and_developer_role(client: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    messages = [{"role": "developer", "content": "Be brief."}, *USER]
    response = client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=3, temperature=0, n=1, user="u-1",
        presence_penalty=0.5, frequency_penalty=0.0, response_format={"type": "text"})
    as_system = [{"role": "system", "content": "Be brief."}, *USER]
    assert response.usage.prompt_tokens == len(template_ids(tokenizer, as_system))


# -- summarizing through the server ------------------------------------------------------------
def test_openai_summarizer_against_the_server(tiny: Any) -> None:
    from contextwindow import summarize
    from contextwindow.memory import SummaryBufferMemory

    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=2048)
    with BackgroundServer(create_app(generator)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
        summarizer = summarize.OpenAISummarizer(MODEL_ID, base_url=srv.url, max_tokens=24)
        messages = sample_conversation(3, seed=1)[1:]
        summary = summarizer.summarize(None, messages)
        direct = client.chat.completions.create(**summarizer.request(None, messages))
        assert direct.choices[0].message.content  # temperature 0: the same text both times
        assert summary == summarize.clean_summary(direct.choices[0].message.content)
        assert asyncio.run(summarizer.asummarize(None, messages)) == summary

        memory = SummaryBufferMemory(200, summarizer, counter=generator.counter)
        for message in sample_conversation(12, seed=1, tool_every=0):
            memory.add_message(message)
        assert srv.app.state.worker.stats["completed"] >= 3
    assert memory.summary is not None and memory.summary.text
    assert memory.token_count() <= 200


# -- the command line -------------------------------------------------------------------------
def test_serve_command_starts_a_working_server(tmp_path: Any, tiny: Any) -> None:
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "contextwindow", "serve", "--model", str(tmp_path / "tiny"),
         "--port", str(port), "--overflow", "sinks", "--rope", "yarn", "--rope-factor", "2",
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(f"{base}/models", timeout=2).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert models["data"][0]["id"] == "tiny"
        assert models["data"][0]["context_window"] == 2 * 8192  # YaRN x2 on an 8k model
        assert models["data"][0]["policy"] == "sinks"
        assert models["data"][0]["engine"] == "transformers"
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=4,
                                               temperature=0)
        assert reply.usage.completion_tokens == 4
    finally:
        process.terminate()
        process.wait(30)


def test_generator_direct_api(tiny: Any) -> None:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id=MODEL_ID, context=CONTEXT)
    pieces: list[str] = []
    fit, completion = generator.chat(USER, SamplingParams(max_tokens=12, temperature=0),
                                     on_text=pieces.append)
    assert "".join(pieces) == completion.text == greedy_reference(model, tokenizer, USER, 12)
    assert fit.prompt_ids == template_ids(tokenizer, USER)
    assert completion.completion_tokens == 12 and completion.finish_reason == "length"


# -- the real model ---------------------------------------------------------------------------
REAL_CONTEXT = 1024
REAL_NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def real(smollm2: tuple[Any, Any]) -> Any:
    """SmolLM2-135M-Instruct behind the server, with a 1,024-token window to keep it quick."""
    model, tokenizer = smollm2
    generator = Generator(model, tokenizer, model_id=REAL_NAME, context=REAL_CONTEXT)
    with BackgroundServer(create_app(generator)) as srv:
        srv.generator = generator
        srv.client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0,
                                   timeout=600)
        yield srv


@pytest.mark.slow
class TestRealModel:
    CONTEXT = REAL_CONTEXT
    NAME = REAL_NAME

    QUESTION = [{"role": "user", "content": "What is the capital of France?"}]  # noqa: RUF012

    def test_completion_and_stream(self, real: Any) -> None:
        reply = real.client.chat.completions.create(model=self.NAME, messages=self.QUESTION,
                                                    max_tokens=12, temperature=0)
        text = reply.choices[0].message.content
        assert "Paris" in text
        chunks = real.client.chat.completions.create(model=self.NAME, messages=self.QUESTION,
                                                     max_tokens=12, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text

    def test_overlong_conversation_is_trimmed(self, real: Any) -> None:
        conversation = to_openai(sample_conversation(50, seed=5)) + self.QUESTION
        counter = real.generator.counter
        expected = trim(conversation, self.CONTEXT - 8, counter,
                        cache_policy=real.generator.cache_policy)
        assert counter.count_messages(conversation) > self.CONTEXT
        raw = real.client.chat.completions.with_raw_response.create(
            model=self.NAME, messages=conversation, max_tokens=8, temperature=0)
        usage = raw.parse().usage
        assert usage.prompt_tokens == counter.count_messages(expected) <= self.CONTEXT - 8
        assert usage.model_extra["trimmed_messages"] == len(conversation) - len(expected)
        trimmed = counter.count_messages(conversation) - usage.prompt_tokens
        assert raw.headers[TRIMMED_TOKENS_HEADER] == str(trimmed)

    def test_without_trimming_it_is_a_400(self, smollm2: tuple[Any, Any]) -> None:
        model, tokenizer = smollm2
        generator = Generator(model, tokenizer, model_id=self.NAME, context=self.CONTEXT,
                              policy="none")
        conversation = to_openai(sample_conversation(50, seed=5)) + self.QUESTION
        with BackgroundServer(create_app(generator)) as srv:
            client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model=self.NAME, messages=conversation,
                                               max_tokens=8)
        assert info.value.body["code"] == "context_length_exceeded"

    def test_concurrent_clients(self, real: Any) -> None:
        questions = [[{"role": "user", "content": q}] for q in
                     ("What is the capital of France?", "Name a primary colour.")]

        def ask(messages: list[dict[str, Any]]) -> str:
            return real.client.chat.completions.create(
                model=self.NAME, messages=messages, max_tokens=4,
                temperature=0).choices[0].message.content

        alone = [ask(q) for q in questions]
        with ThreadPoolExecutor(len(questions)) as pool:
            together = list(pool.map(ask, questions))
        assert together == alone
