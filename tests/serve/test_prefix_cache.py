"""KV prefix reuse: a warm prefill gives the logits of a cold one, the cache keeps its byte budget,
requests sharing a prefix never share tensors, and the server reports the reuse.

Logits are compared at ``atol=1e-4`` (fp32): a warm prefill computes the suffix against keys
and values from another chunking of the same ids, which changes only float rounding (about 2e-6
on the tiny model).
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import openai
import pytest
import torch
from test_serve import build_tiny_chat_model

from contextwindow.errors import ConfigError
from contextwindow.generation import Generator, SamplingParams
from contextwindow.generation.prefix import PrefixCache, common_prefix
from contextwindow.models import DEFAULT_MODEL
from contextwindow.models.hf import forward
from contextwindow.serve import BackgroundServer, create_app

ATOL = 1e-4
CONTEXT = 512
GREEDY = SamplingParams(max_tokens=12, temperature=0)
#: Key and value bytes per token of ``tiny_llama``: 2 layers x (keys, values) x 2 KV heads x
#: head_dim 16 x 4 bytes (fp32).
TINY_TOKEN_BYTES = 2 * 2 * 2 * 16 * 4
CHAT = [{"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Name three rivers in Europe, please."}]


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_chat_model()


def ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 49152) for _ in range(n)]


def generators(tiny: Any, *, sink_cache: bool, mb: float = 64) -> tuple[Generator, Generator]:
    """A generator with a prefix cache of ``mb`` MiB and the same one without (cold)."""
    model, tokenizer = tiny
    return (Generator(model, tokenizer, context=CONTEXT, sink_cache=sink_cache,
                      prefix_cache_mb=mb),
            Generator(model, tokenizer, context=CONTEXT, sink_cache=sink_cache,
                      prefix_cache_mb=0))


def remember(generator: Generator, prompt: list[int]) -> None:
    """Prefill ``prompt`` and keep its cache, as ``generate`` does after a reply."""
    run = generator.prefill(prompt)
    assert generator.prefix_cache.store(run.ids, run.cache)


def assert_same_logits(warm: Generator, cold: Generator, prompt: list[int],
                       cached: int) -> None:
    run, reference = warm.prefill(prompt), cold.prefill(prompt)
    assert run.cached == cached and reference.cached == 0
    assert run.ids == prompt
    torch.testing.assert_close(run.logits, reference.logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("sink_cache", [True, False], ids=["sink", "dense"])
def test_extension_of_a_cached_prefix_has_cold_logits(tiny: Any, sink_cache: bool) -> None:
    warm, cold = generators(tiny, sink_cache=sink_cache)
    first = ids(1, 120)
    remember(warm, first)
    assert_same_logits(warm, cold, first + ids(2, 30), cached=120)


@pytest.mark.parametrize("sink_cache", [True, False], ids=["sink", "dense"])
def test_after_a_cut_only_the_common_prefix_is_reused(tiny: Any, sink_cache: bool) -> None:
    warm, cold = generators(tiny, sink_cache=sink_cache)
    first = ids(1, 120)
    remember(warm, first)
    cut = first[:50] + ids(3, 40)  # diverges mid-way, as after a trimming cut
    assert common_prefix(first, cut) == 50
    assert_same_logits(warm, cold, cut, cached=50)
    assert_same_logits(warm, cold, first, cached=119)  # all of it but the token that gives logits


def test_after_eviction_the_prompt_is_prefilled_cold(tiny: Any) -> None:
    warm, cold = generators(tiny, sink_cache=False)
    first, other = ids(1, 100), ids(4, 100)
    remember(warm, first)
    one_entry = warm.prefix_cache.nbytes
    warm.prefix_cache.max_bytes = one_entry  # room for exactly one entry
    remember(warm, other)
    assert len(warm.prefix_cache) == 1 and warm.prefix_cache.evictions == 1
    assert warm.prefix_cache.peak_bytes == one_entry
    assert_same_logits(warm, cold, first + ids(5, 10), cached=0)
    assert_same_logits(warm, cold, other + ids(5, 10), cached=100)


def test_generated_replies_match_a_cold_prefill(tiny: Any) -> None:
    """Through ``chat``: turn 2 reuses turn 1's prompt and reply, and says the same."""
    warm, cold = generators(tiny, sink_cache=True)
    fit, reply = warm.chat(CHAT, GREEDY)
    assert reply.cached_tokens == 0
    stored = fit.prompt_ids + reply.token_ids[:-1]  # the last sampled token was never fed
    assert len(warm.prefix_cache) == 1
    conversation = [*CHAT, {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": "And in Asia?"}]
    fit2, warm_reply = warm.chat(conversation, GREEDY)
    _, cold_reply = cold.chat(conversation, GREEDY)
    assert warm_reply.cached_tokens == common_prefix(stored, fit2.prompt_ids) >= fit.prompt_tokens
    assert warm_reply.text == cold_reply.text and warm_reply.token_ids == cold_reply.token_ids
    assert len(warm.prefix_cache) == 1  # turn 1's entry is a prefix of turn 2's: replaced


def test_a_sink_cache_that_evicted_is_not_kept(tiny: Any) -> None:
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, context=64, sink_cache=True)
    _, reply = generator.chat(CHAT, SamplingParams(max_tokens=60, temperature=0))
    assert reply.kv_evicted_tokens > 0
    assert len(generator.prefix_cache) == 0


def test_prefix_cache_never_exceeds_its_byte_budget(tiny_llama: Any) -> None:
    """Random stores and lookups: the bytes held stay within budget, and equal the entries'."""
    from transformers import DynamicCache

    def cache_of(prompt: list[int]) -> Any:
        cache = DynamicCache(config=tiny_llama.config)
        forward(tiny_llama, torch.tensor([prompt]), cache)
        return cache

    prefix = PrefixCache(200 * TINY_TOKEN_BYTES)
    rng = random.Random(0)
    with torch.inference_mode():
        for step in range(40):
            prompt = [rng.randrange(128) for _ in range(rng.randrange(1, 260))]
            kept = prefix.store(prompt, cache_of(prompt))
            assert kept == (len(prompt) <= 200)
            assert prefix.nbytes <= prefix.max_bytes
            assert prefix.nbytes == sum(e.nbytes for e in prefix._entries.values())
            if step % 3 == 0:
                prefix.restore(prompt + [1], DynamicCache(config=tiny_llama.config))
    assert prefix.peak_bytes <= prefix.max_bytes and prefix.evictions > 0


def test_least_recently_used_goes_first(tiny_llama: Any) -> None:
    from transformers import DynamicCache

    def stored(prompt: list[int]) -> Any:
        cache = DynamicCache(config=tiny_llama.config)
        forward(tiny_llama, torch.tensor([prompt]), cache)
        return cache

    a, b, c = ([k] * 10 for k in (5, 6, 7))
    with torch.inference_mode():
        prefix = PrefixCache(2 * 10 * TINY_TOKEN_BYTES)  # two 10-token entries
        prefix.store(a, stored(a))
        prefix.store(b, stored(b))
        assert prefix.restore(a + [1], DynamicCache(config=tiny_llama.config)) == 10  # a is fresh
        prefix.store(c, stored(c))  # evicts b, the least recently used
        assert prefix.restore(b + [1], DynamicCache(config=tiny_llama.config)) == 0
        assert prefix.restore(a + [1], DynamicCache(config=tiny_llama.config)) == 10


def test_concurrent_requests_sharing_a_prefix_get_their_own_copies(tiny: Any) -> None:
    """Two threads restore the same entry at once and extend it differently: both get cold
    logits, and the stored entry is unchanged."""
    warm, cold = generators(tiny, sink_cache=False)
    first = ids(1, 100)
    remember(warm, first)
    (entry,) = warm.prefix_cache._entries.values()
    before = [(k.clone(), v.clone()) for k, v in entry.layers]
    tails = {name: ids(seed, 20) for name, seed in (("x", 7), ("y", 8))}
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        cache = warm.new_cache()
        barrier.wait()
        cached = warm.prefix_cache.restore(first + tails[name], cache)
        with torch.inference_mode():
            out = forward(warm.model, torch.tensor([tails[name]]), cache, logits_to_keep=1)
        results[name] = (cached, out.logits[0, -1])

    threads = [threading.Thread(target=run, args=(name,)) for name in tails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, tail in tails.items():
        cached, logits = results[name]
        assert cached == 100
        torch.testing.assert_close(logits, cold.prefill(first + tail).logits, atol=ATOL, rtol=0)
    for (k, v), (k0, v0) in zip(entry.layers, before, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


@pytest.mark.parametrize("size", [-1, "1", float("nan")])
def test_prefix_cache_size_is_checked(tiny: Any, size: Any) -> None:
    model, tokenizer = tiny
    with pytest.raises(ConfigError):
        Generator(model, tokenizer, context=CONTEXT, prefix_cache_mb=size)


def test_server_reports_cached_tokens(tiny: Any) -> None:
    """The same request twice: the second reuses all its prompt but the last token, in the
    usage of a plain and of a streamed answer, as OpenAI reports prompt caching."""
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, model_id="tiny", context=CONTEXT)
    with BackgroundServer(create_app(generator)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        first = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4,
                                               temperature=0)
        again = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4,
                                               temperature=0)
        stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        usage = [c.usage for c in stream if c.usage is not None][-1]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    prompt = first.usage.prompt_tokens
    assert again.usage.prompt_tokens_details.cached_tokens == prompt - 1
    assert usage.prompt_tokens_details.cached_tokens == prompt - 1
    assert again.choices[0].message.content == first.choices[0].message.content


@pytest.mark.slow
def test_real_model_next_turn_through_the_server_process(smollm2: tuple[Any, Any]) -> None:
    """``contextwindow serve`` on SmolLM2: turn 2 reuses turn 1's prompt and reply and gives the
    reply of a cold prefill."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "contextwindow", "serve", "--model", "smollm2-135m", "--port",
         str(port), "--context",
         "1024", "--threads", "1", "--store", "none", "--prefix-cache-mb", "64",
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 300
        while True:
            try:
                httpx.get(f"{base}/models", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
        name = DEFAULT_MODEL
        first = client.chat.completions.create(model=name, messages=CHAT, max_tokens=16,
                                               temperature=0)
        conversation = [*CHAT, {"role": "assistant", "content": first.choices[0].message.content},
                        {"role": "user", "content": "Which is the longest?"}]
        second = client.chat.completions.create(model=name, messages=conversation,
                                                max_tokens=16, temperature=0)
    finally:
        process.terminate()
        process.wait(30)
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens
    model, tokenizer = smollm2
    cold = Generator(model, tokenizer, context=1024, prefix_cache_mb=0)
    _, reply = cold.chat(conversation, SamplingParams(max_tokens=16, temperature=0))
    assert second.choices[0].message.content == reply.text
