"""Every mechanism on each registered family, on tiny random-init models of the same architecture.

Llama (SmolLM2), Qwen2 (Qwen2.5) and Gemma-3 (sliding-window local layers with their own RoPE
base, and global layers). The ``large_model`` tests at the end run the real Qwen2.5 and Gemma-3;
they are deselected unless ``CONTEXTWINDOW_LARGE_MODELS=1`` (see tests/conftest.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import TINY_DIMS, corpus_text, make_tiny_llama
from kv_streams import assert_sink_cache_equals_fresh_forwards, stream

from contextwindow.errors import ConfigError, UnknownModelError
from contextwindow.kv import SinkCache
from contextwindow.models import layer_inv_freqs, layer_types
from contextwindow.tokens import TokenCounter

SINKS, WINDOW = 2, 8
CAPACITY = SINKS + WINDOW
GEMMA_LAYERS = ["sliding_attention", "full_attention"]


def tiny_qwen2(seed: int = 0, **overrides: Any) -> Any:
    """A 2-layer Qwen2 (biased q/k/v projections, rope base 1e6), GQA 4 / 2, head_dim 16."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    params: dict[str, Any] = dict(
        TINY_DIMS, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=False,
    )
    params.update(overrides)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**params)).eval()


def tiny_gemma3(seed: int = 0, **overrides: Any) -> Any:
    """A Gemma-3 text model: a local layer (sliding window 6, base 1e4) then a global one
    (base 1e6, linear scaling 8 as in the larger checkpoints); GQA 4 / 2, head_dim 16."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    params: dict[str, Any] = dict(
        TINY_DIMS, head_dim=16, sliding_window=6, layer_types=GEMMA_LAYERS,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
        },
    )
    params.update(overrides)
    params["num_hidden_layers"] = len(params["layer_types"])
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(Gemma3TextConfig(**params)).eval()


FAMILIES: dict[str, Callable[..., Any]] = {
    "llama": make_tiny_llama, "qwen2": tiny_qwen2, "gemma3": tiny_gemma3,
}


def random_ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed))


# -- RoPE per layer ---------------------------------------------------------------------------


def test_gemma3_layers_rotate_with_their_own_frequencies() -> None:
    model = tiny_gemma3()
    local = 1.0 / 1e4 ** (torch.arange(0, 16, 2).double() / 16)
    globl = 1.0 / 1e6 ** (torch.arange(0, 16, 2).double() / 16) / 8.0
    freqs = layer_inv_freqs(model)
    assert layer_types(model) == GEMMA_LAYERS
    torch.testing.assert_close(freqs[0].double(), local, rtol=1e-6, atol=0)
    torch.testing.assert_close(freqs[1].double(), globl, rtol=1e-6, atol=0)
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    for layer, expected in zip(cache.layers, (local, globl)):
        torch.testing.assert_close(layer.shift.inv_freq, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_single_rope_families_share_one_rotation(family: str) -> None:
    cache = SinkCache(FAMILIES[family](), sinks=SINKS, window=WINDOW)
    assert cache.layers[0].shift is cache.layers[1].shift


# -- SinkCache on every family ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_sink_cache_equals_dense_within_capacity(family: str) -> None:
    model = FAMILIES[family]()
    ids = random_ids(CAPACITY, seed=1)
    streamed = torch.cat(stream(model, SinkCache(model, sinks=SINKS, window=WINDOW), ids,
                                [4, 1, 3, 1, 1]))
    with torch.no_grad():
        dense = model(input_ids=ids[None]).logits[0]
    torch.testing.assert_close(streamed, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sink_cache_bounds_memory_beyond_capacity(family: str) -> None:
    model = FAMILIES[family]()
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    stream(model, cache, random_ids(5 * CAPACITY, seed=2), [7] + [1] * 20 + [23])
    # 2 KV heads x head_dim 16, keys and values, fp32, per layer
    assert [layer.keys.shape[-2] for layer in cache.layers] == [CAPACITY, CAPACITY]
    assert cache.nbytes() == 2 * CAPACITY * (2 * 16) * 2 * 4
    assert cache.seen_tokens == 5 * CAPACITY


ONE_LAYER: dict[str, Callable[[], Any]] = {
    "llama": lambda: make_tiny_llama(num_hidden_layers=1),
    "qwen2": lambda: tiny_qwen2(num_hidden_layers=1),
    "gemma3-global": lambda: tiny_gemma3(layer_types=["full_attention"]),
    "gemma3-local": lambda: tiny_gemma3(layer_types=["sliding_attention"]),
}


@pytest.mark.parametrize("kind", ONE_LAYER)
@pytest.mark.parametrize("sinks", [SINKS, 0])
def test_one_layer_after_eviction_equals_a_fresh_forward_over_the_kept_tokens(
    kind: str, sinks: int
) -> None:
    # One layer: K/V depend only on a token and its position, so after any eviction the cache
    # must behave exactly like a fresh forward over the kept tokens + the chunk. For Gemma-3's
    # local layer the fresh forward applies the same sliding window (6 < capacity), so this also
    # checks that the cache and the sliding mask agree on slot numbers.
    assert_sink_cache_equals_fresh_forwards(ONE_LAYER[kind](), random_ids(60, seed=3), sinks,
                                            WINDOW, [6, 1, 1, 5, 12, 1, 3, 1, 20, 1, 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_equals_the_manual_loop_far_past_the_window(family: str) -> None:
    # generate() numbers tokens from the start of the stream, the manual loop leaves positions
    # to the model (slot numbers): the sink cache must make both see the same attention.
    model = FAMILIES[family]()
    prompt = random_ids(5, seed=4)[None]
    new = 4 * CAPACITY
    generated = model.generate(prompt, cache=SinkCache(model, sinks=SINKS, window=WINDOW),
                               max_new_tokens=new, min_new_tokens=new, do_sample=False)
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    tokens = prompt[0].tolist()
    with torch.no_grad():
        logits = model(input_ids=prompt, cache=cache).logits[0, -1]
        for _ in range(new):
            tokens.append(int(logits.argmax()))
            logits = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache).logits[0, -1]
    assert generated[0].tolist() == tokens


# -- RoPE evaluation and scaling ---------------------------------------------------------------


def char_tokenizer(text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
    """One id per character (mod 128): enough to feed a tiny model a text."""
    return {"input_ids": [ord(c) % 128 for c in text]}


@pytest.mark.parametrize("family", FAMILIES)
def test_perplexity_by_position_equals_a_full_forward(family: str) -> None:
    from contextwindow.evaluate.positions import perplexity_by_position

    model = FAMILIES[family]()
    text = "It is a truth universally acknowledged, that a single man in possession " * 2
    result = perplexity_by_position(model, char_tokenizer, text, 96, 32, chunk=40)
    ids = torch.tensor([char_tokenizer(text)["input_ids"][:96]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    assert result.tokens == (31, 32, 32)
    assert result.overall_ppl == pytest.approx(math.exp(float(nll.mean())), rel=1e-5)


def test_passkey_reuses_its_prefix_cache_on_sliding_window_layers(smollm2_tokenizer: Any) -> None:
    # Trials at one depth share the filler before the key: the second one crops the cached
    # prefix, which a sliding-window layer that already dropped tokens could not do.
    from contextwindow.evaluate.passkey import passkey_retrieval

    model = tiny_gemma3(vocab_size=49152, initializer_range=0.2)
    result = passkey_retrieval(model, smollm2_tokenizer, 160, depth=0.5, trials=2,
                               max_new_tokens=3, prefill_chunk=32)
    assert result.trials == 2 and len(result.answers) == 2


DEFAULT_GEMMA_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                      "full_attention": {"rope_type": "default", "rope_theta": 1e6}}


@pytest.mark.parametrize("method, factor", [("linear", 4.0), ("yarn", 4.0)])
def test_scale_rope_on_gemma3_scales_the_global_layers_as_transformers_would(
    method: str, factor: float
) -> None:
    from contextwindow.rope import scale_rope

    model = tiny_gemma3(rope_parameters=copy.deepcopy(DEFAULT_GEMMA_ROPE))
    ids = random_ids(40, seed=9)[None]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    local = layer_inv_freqs(model)[0].clone()
    exported = scale_rope(model, method, factor)
    assert exported["rope_type"] == method and exported["rope_theta"] == 1e6
    # transformers building the same weights from the exported config gives the same model
    fresh = tiny_gemma3(rope_parameters={**copy.deepcopy(DEFAULT_GEMMA_ROPE),
                                         "full_attention": exported})
    rotary, expected = model.model.rotary_emb, fresh.model.rotary_emb
    torch.testing.assert_close(rotary.full_attention_inv_freq, expected.full_attention_inv_freq)
    assert rotary.full_attention_attention_scaling == expected.full_attention_attention_scaling
    torch.testing.assert_close(layer_inv_freqs(model)[0], local, rtol=0, atol=0)  # local: as is
    with torch.no_grad():
        scaled = model(input_ids=ids).logits
        torch.testing.assert_close(scaled, fresh(input_ids=ids).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(scaled, before, atol=1e-4)
        scale_rope(model, "none")
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    assert model.config.rope_parameters == DEFAULT_GEMMA_ROPE


def test_length_dependent_scaling_on_gemma3_must_be_frozen() -> None:
    from contextwindow.rope import scale_rope

    with pytest.raises(ConfigError, match="give seq_len to freeze it"):
        scale_rope(tiny_gemma3(), "dynamic", 2.0)


# -- chat templates ---------------------------------------------------------------------------


# Qwen2.5-Instruct's template without its tools branch (ChatML, Qwen's default system prompt)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    return AutoTokenizer.from_pretrained(resolve())


def _conversations() -> list[list[dict[str, str]]]:
    turns = [{"role": "user", "content": "I'm Ingrid, visiting Lisbon."},
             {"role": "assistant", "content": "Welcome, Ingrid!"},
             {"role": "user", "content": "Ünïcode, emoji 🎉 and\nnew lines?"}]
    system = {"role": "system", "content": "You are a travel assistant."}
    return [turns[:end] for end in (1, 3)] + [[system, *turns[:end]] for end in (1, 2, 3)]


@pytest.mark.parametrize("template", ["smollm2", "qwen2.5"])
def test_counts_equal_the_chat_template(smollm2_tokenizer: Any, template: str) -> None:
    tokenizer = smollm2_tokenizer
    if template == "qwen2.5":
        tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = QWEN25_TEMPLATE
    counter = TokenCounter.from_hf(tokenizer)
    for conversation in _conversations():
        ids = tokenizer.apply_chat_template(conversation, tokenize=True,
                                            add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert counter.count_messages(conversation) == len(ids)


def test_a_tokenizer_without_a_chat_template_is_refused_clearly(smollm2_tokenizer: Any) -> None:
    tokenizer = type(smollm2_tokenizer).from_pretrained(smollm2_tokenizer.name_or_path)
    tokenizer.chat_template = None  # like the registered Gemma-3-270M (a pretrained model)
    with pytest.raises(UnknownModelError, match="no chat template"):
        TokenCounter.from_hf(tokenizer)


# -- the real models (opt-in) -----------------------------------------------------------------


def _real(name: str) -> tuple[Any, Any]:
    from contextwindow.models import load_model

    return load_model(name, dtype="float32")


@pytest.mark.large_model
@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "gemma3-270m"])
def test_real_model_streams_like_dense_within_capacity_and_better_than_a_window(
    name: str,
) -> None:
    from contextwindow.evaluate.streaming import streaming_perplexity

    model, tokenizer = _real(name)
    text = corpus_text("austen_northangerabbey.txt")
    runs = {
        label: streaming_perplexity(model, tokenizer, text, cache=make(), chunk=64,
                                    max_tokens=640).ppl
        for label, make in {
            "dense": lambda: None,
            "sinks": lambda: SinkCache(model, sinks=4, window=252),
            "window": lambda: SinkCache(model, sinks=0, window=256),
        }.items()
    }
    assert all(math.isfinite(v) for v in runs.values())
    assert runs["sinks"] < 1.1 * runs["dense"]
    assert runs["sinks"] < runs["window"]


@pytest.mark.large_model
def test_qwen_answers_the_demo_recall_question() -> None:
    from contextwindow.generation import Generator, SamplingParams

    model, tokenizer = _real("qwen2.5-0.5b")
    generator = Generator(model, tokenizer, model_id="qwen2.5-0.5b", context=512)
    _, completion = generator.chat(
        [{"role": "system", "content": "You are a helpful travel assistant."},
         {"role": "user", "content": "Hi! I'm Ingrid, and I'm visiting Lisbon."},
         {"role": "assistant", "content": "Welcome, Ingrid! Lisbon is lovely."},
         {"role": "user", "content": "What is my name, and which city am I visiting?"}],
        SamplingParams(max_tokens=24, temperature=0.0))
    assert "Ingrid" in completion.text and "Lisbon" in completion.text


@pytest.mark.large_model
def test_counts_equal_the_real_qwen_template_and_gemma_has_none() -> None:
    from transformers import AutoTokenizer

    from contextwindow.models import resolve

    qwen = AutoTokenizer.from_pretrained(resolve("qwen2.5-0.5b"))
    counter = TokenCounter.from_hf(qwen)
    for conversation in _conversations():
        ids = qwen.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert counter.count_messages(conversation) == len(ids)
    with pytest.raises(UnknownModelError, match="no chat template"):
        TokenCounter.from_hf(AutoTokenizer.from_pretrained(resolve("gemma3-270m")))
