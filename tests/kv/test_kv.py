"""SinkCache: positions, eviction, generate() and errors, on tiny random models (fast)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY_DIMS, make_tiny_llama
from kv_streams import assert_sink_cache_equals_fresh_forwards, kept_ids, stream
from transformers import DynamicCache

from contextwindow.errors import ConfigError, ModelError
from contextwindow.kv import Eviction, RopeShift, SinkCache, SinkPolicy

SINKS, WINDOW = 2, 8
CAPACITY = SINKS + WINDOW


def fresh_keys(model: Any, ids: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Layer keys of a fresh dense forward over ``ids`` at positions 0..len-1."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[None], cache=cache)
    return cache.layers[layer].keys


def tiny_phi(**overrides: Any) -> Any:
    """A 2-layer Phi with partial rotary (half of head_dim 16 rotates) and GQA (4 heads / 2 KV)."""
    from transformers import PhiConfig, PhiForCausalLM

    params: dict[str, Any] = dict(
        TINY_DIMS,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
        },
    )
    params.update(overrides)
    torch.manual_seed(0)
    return PhiForCausalLM(PhiConfig(**params)).eval()


# -- policy and rotation -------------------------------------------------------------------------


def test_policy_keeps_first_sinks_and_last_window() -> None:
    policy = SinkPolicy(sinks=4, window=6)
    assert policy.capacity == 10
    assert policy.evict(10) is None
    assert policy.evict(11) == Eviction(sinks=4, start=5)
    assert policy.evict(11).shift == 1
    assert policy.evict(74).shift == 64
    assert SinkPolicy(sinks=0, window=3).evict(5) == Eviction(sinks=0, start=2)


@pytest.mark.parametrize("sinks, window", [(-1, 4), (2, 0), (2.5, 4)])
def test_policy_rejects_bad_sizes(sinks: Any, window: Any) -> None:
    with pytest.raises(ConfigError):
        SinkPolicy(sinks=sinks, window=window)


@pytest.mark.parametrize("rotary_dim", [16, 8])  # full and partial rotary, head_dim 16
def test_rope_shift_equals_rotation_at_the_new_position(rotary_dim: int) -> None:
    from transformers.models.llama.modeling_llama import rotate_half

    torch.manual_seed(1)
    head_dim = 16
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    raw = torch.randn(1, 2, 5, head_dim)

    def at(positions: torch.Tensor) -> torch.Tensor:  # the model's own RoPE, on the rotary part
        angle = positions[:, None].float() * inv_freq
        cos, sin = torch.cat((angle, angle), -1).cos(), torch.cat((angle, angle), -1).sin()
        rot, rest = raw[..., :rotary_dim], raw[..., rotary_dim:]
        return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)

    positions = torch.tensor([40, 41, 42, 43, 44])
    shift = RopeShift(inv_freq)
    assert shift.rotary_dim == rotary_dim
    moved = shift(at(positions), -37)
    torch.testing.assert_close(moved, at(positions - 37), atol=1e-5, rtol=0)
    # the pass-through channels are untouched, bit for bit
    assert torch.equal(moved[..., rotary_dim:], raw[..., rotary_dim:])
    torch.testing.assert_close(shift(moved, 37), at(positions), atol=1e-5, rtol=0)


# -- cache contents ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_tiny_llama, tiny_phi], ids=["llama-gqa", "phi-partial-gqa"])
def test_rerotated_keys_equal_keys_computed_fresh_at_their_new_positions(make: Any) -> None:
    model = make()
    ids = torch.randint(0, 128, (60,), generator=torch.Generator().manual_seed(0))
    cache = SinkCache(model, sinks=SINKS, window=WINDOW)
    seen = 0
    for size in [3, 5, 1, 1, 4, 13, 1, 2, 7, 1, 1, 9, 12]:  # 13 and 12 are longer than the window
        stream(model, cache, ids[seen:], [size])
        seen += size
        kept = kept_ids(seen, SINKS, WINDOW)
        expected = fresh_keys(model, ids[kept])
        assert cache.layers[0].keys.shape == expected.shape
        torch.testing.assert_close(cache.layers[0].keys, expected, atol=1e-5, rtol=0)
    assert seen == 60 and cache.seen_tokens == 60


def test_sinks_are_never_evicted_or_modified(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (80,), generator=torch.Generator().manual_seed(1))
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    stream(tiny_llama, cache, ids, [5])
    sinks = [
        (layer.keys[..., :SINKS, :].clone(), layer.values[..., :SINKS, :].clone())
        for layer in cache.layers
    ]
    stream(tiny_llama, cache, ids[5:], [1] * 30 + [20, 3, 22])
    for layer, (keys, values) in zip(cache.layers, sinks):
        assert torch.equal(layer.keys[..., :SINKS, :], keys)
        assert torch.equal(layer.values[..., :SINKS, :], values)


def test_cache_never_holds_more_than_sinks_plus_window(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (100,), generator=torch.Generator().manual_seed(2))
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    seen = 0
    for size in [1] * 20 + [4, 30, 1, 7] + [1] * 38:
        stream(tiny_llama, cache, ids[seen:], [size])
        seen += size
        lengths = {layer.keys.shape[-2] for layer in cache.layers}
        assert lengths == {min(seen, CAPACITY)}
        assert cache.get_seq_length() == min(seen, CAPACITY)
        assert {layer.values.shape[-2] for layer in cache.layers} == lengths
    assert cache.seen_tokens == seen == 100
    assert cache.get_max_length() == CAPACITY
    # memory is bounded: 2 layers x (K, V) x 2 KV heads x 10 slots x 16 dims x 4 bytes
    assert cache.nbytes() == 2 * 2 * 2 * CAPACITY * 16 * 4


def test_values_of_the_window_are_the_newest_values_unchanged(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(3))
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    dense = DynamicCache(config=tiny_llama.config)
    with torch.no_grad():
        tiny_llama(input_ids=ids[None], cache=dense)  # layer 0 values depend on the token only
    stream(tiny_llama, cache, ids, [1] * 30)
    kept = kept_ids(30, SINKS, WINDOW)
    torch.testing.assert_close(cache.layers[0].values, dense.layers[0].values[..., kept, :])


# -- attention outputs ---------------------------------------------------------------------------


def test_logits_before_any_eviction_equal_dense_exactly(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (CAPACITY,), generator=torch.Generator().manual_seed(4))
    chunks = [4, 1, 1, 3, 1]
    sink = stream(tiny_llama, SinkCache(tiny_llama, sinks=SINKS, window=WINDOW), ids, chunks)
    dense = stream(tiny_llama, DynamicCache(config=tiny_llama.config), ids, chunks)
    for a, b in zip(sink, dense):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sinks", [SINKS, 0])
def test_one_layer_logits_equal_a_fresh_forward_over_the_kept_tokens(sinks: int) -> None:
    # With one layer a token's K/V depend only on the token and its position, so after any
    # eviction the cache must behave exactly like a fresh forward over sinks + window + chunk.
    model = make_tiny_llama(num_hidden_layers=1)
    ids = torch.randint(0, 128, (71,), generator=torch.Generator().manual_seed(5))
    assert_sink_cache_equals_fresh_forwards(model, ids, sinks, WINDOW,
                                            [6, 1, 1, 1, 5, 12, 1, 3, 1, 1, 20, 1, 1, 17])


def test_explicit_stream_positions_give_the_same_logits_as_positions_left_to_the_model(
    tiny_llama: Any,
) -> None:
    # generate() numbers tokens from the start of the stream; the cache must compensate.
    ids = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(6))
    left = stream(
        tiny_llama, SinkCache(tiny_llama, sinks=SINKS, window=WINDOW), ids, [3] + [1] * 37
    )
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    explicit, start = [], 0
    with torch.no_grad():
        for size in [3] + [1] * 37:
            positions = torch.arange(start, start + size)[None]
            piece = ids[start : start + size][None]
            explicit.append(
                tiny_llama(input_ids=piece, position_ids=positions, cache=cache).logits[0]
            )
            start += size
    for a, b in zip(left, explicit):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_generate_runs_far_past_the_window_and_starts_like_dynamic_cache(tiny_llama: Any) -> None:
    prompt = torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(7))
    new = 3 * CAPACITY
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    sink = tiny_llama.generate(
        prompt, cache=cache, max_new_tokens=new, do_sample=False, min_new_tokens=new
    )
    dense = tiny_llama.generate(prompt, max_new_tokens=new, do_sample=False, min_new_tokens=new)
    assert sink.shape == dense.shape == (1, 4 + new)
    # The token generated from a context of n tokens only sees evictions once n > capacity.
    assert torch.equal(sink[0, : CAPACITY + 1], dense[0, : CAPACITY + 1])
    assert cache.get_seq_length() == CAPACITY
    assert cache.seen_tokens == 4 + new - 1  # the last token is generated, never fed


def test_generate_matches_fresh_forwards_after_eviction() -> None:
    model = make_tiny_llama(num_hidden_layers=1)
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(8))
    out = model.generate(
        prompt,
        cache=SinkCache(model, sinks=SINKS, window=WINDOW),
        max_new_tokens=30,
        min_new_tokens=30,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    sequence = out.sequences[0]
    for step, logits in enumerate(out.logits):
        fed = 5 + step  # tokens fed before this prediction
        context = kept_ids(fed - 1, SINKS, WINDOW) + [fed - 1]
        with torch.no_grad():
            expected = model(input_ids=sequence[context][None]).logits[0, -1]
        torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=0)


def test_without_reposition_the_kept_keys_keep_their_old_rotation(tiny_llama: Any) -> None:
    ids = torch.randint(0, 128, (CAPACITY + 1,), generator=torch.Generator().manual_seed(9))
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW, reposition=False)
    stream(tiny_llama, cache, ids, [CAPACITY])
    before = [layer.keys.clone() for layer in cache.layers]
    stream(tiny_llama, cache, ids[CAPACITY:], [1])
    new_key = fresh_keys(tiny_llama, ids)[..., -1:, :]  # layer 0, written at slot/position 10
    for layer, old in zip(cache.layers, before):
        assert torch.equal(layer.keys[..., :SINKS, :], old[..., :SINKS, :])
        assert torch.equal(layer.keys[..., SINKS : CAPACITY - 1, :], old[..., SINKS + 1 :, :])
    torch.testing.assert_close(cache.layers[0].keys[..., -1:, :], new_key, atol=1e-6, rtol=0)
    # ...whereas the repositioning cache moved them back by one position
    moved = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    stream(tiny_llama, moved, ids, [CAPACITY, 1])
    assert not torch.allclose(
        moved.layers[0].keys[..., SINKS:, :], cache.layers[0].keys[..., SINKS:, :]
    )
    torch.testing.assert_close(
        moved.layers[0].keys, fresh_keys(tiny_llama, ids[kept_ids(CAPACITY + 1, SINKS, WINDOW)]),
        atol=1e-5, rtol=0,
    )


# -- errors --------------------------------------------------------------------------------------


def test_model_without_rope_is_rejected() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    )
    with pytest.raises(ModelError, match="RoPE"):
        SinkCache(gpt2)


def test_batch_larger_than_one_is_rejected(tiny_llama: Any) -> None:
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    with pytest.raises(ConfigError, match="batch size 1"), torch.no_grad():
        tiny_llama(input_ids=torch.zeros(2, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="batch size 1"):
        tiny_llama.generate(
            torch.zeros(1, 3, dtype=torch.long),
            cache=SinkCache(tiny_llama),
            num_beams=2,
            max_new_tokens=2,
            do_sample=False,
        )


def test_non_consecutive_positions_and_crop_are_rejected(tiny_llama: Any) -> None:
    cache = SinkCache(tiny_llama, sinks=SINKS, window=WINDOW)
    with pytest.raises(ConfigError, match="consecutive"), torch.no_grad():
        tiny_llama(
            input_ids=torch.zeros(1, 3, dtype=torch.long),
            position_ids=torch.tensor([[0, 2, 4]]),
            cache=cache,
        )
    with pytest.raises(ConfigError, match="cropped"):
        SinkCache(tiny_llama).crop(-1)
