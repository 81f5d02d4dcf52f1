"""RoPE scaling: the registry against transformers' own functions, closed forms, scale_rope on a
tiny Llama (buffers, config, export round trip, restore), dynamic NTK with a KV cache, llama.cpp
flags, and error messages."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import contextwindow.rope as rope_mod
import contextwindow.rope.registry as rope_registry
from contextwindow.errors import ConfigError, ModelError
from contextwindow.models import rotary_embedding
from contextwindow.rope import (
    RopeInputs,
    available_methods,
    compute,
    default_inv_freq,
    dynamic_ntk_base,
    get_method,
    ntk_base,
    register,
    rope_length,
    scale_rope,
    to_llamacpp_flags,
)

# --------------------------------------------------------------------------------------------
# registry vs transformers
# --------------------------------------------------------------------------------------------


def hf(rope_parameters: dict, head_dim: int, max_positions: int, seq_len=None):
    config = LlamaConfig(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_parameters=dict(rope_parameters),
    )
    return ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](config, None, seq_len=seq_len)


def ours(
    method: str, head_dim: int, base: float, factor: float, original: int, seq_len=None, **params
):
    return compute(method, RopeInputs(head_dim, base, factor, original, seq_len, params))


def assert_same(a, b) -> None:
    (inv_a, scale_a), (inv_b, scale_b) = a, b
    assert inv_a.dtype == inv_b.dtype == torch.float32
    assert torch.equal(inv_a, inv_b), (inv_a - inv_b).abs().max()
    assert scale_a == scale_b


@pytest.mark.parametrize(
    "head_dim,base,factor",
    [(16, 10000.0, 2.0), (64, 100000.0, 4.0), (128, 500000.0, 1.5), (96, 1e6, 8.0)],
)
def test_linear_equals_transformers(head_dim, base, factor):
    expected = hf({"rope_type": "linear", "factor": factor, "rope_theta": base}, head_dim, 256)
    assert_same(ours("linear", head_dim, base, factor, 256), expected)


@pytest.mark.parametrize(
    "head_dim,base,factor,original,seq_len",
    [
        (16, 10000.0, 2.0, 256, None),
        (16, 10000.0, 2.0, 256, 100),
        (16, 10000.0, 2.0, 256, 256),
        (16, 10000.0, 2.0, 256, 257),
        (16, 10000.0, 2.0, 256, 1000),
        (64, 100000.0, 2.0, 8192, 16384),
        (64, 100000.0, 4.0, 8192, 12288),
        (128, 500000.0, 3.0, 4096, 10000),
    ],
)
def test_dynamic_equals_transformers(head_dim, base, factor, original, seq_len):
    expected = hf(
        {"rope_type": "dynamic", "factor": factor, "rope_theta": base}, head_dim, original, seq_len
    )
    assert_same(ours("dynamic", head_dim, base, factor, original, seq_len), expected)


YARN_CASES = [
    (16, 10000.0, 2.0, 256, {}),
    (64, 100000.0, 2.0, 8192, {}),
    (64, 100000.0, 4.0, 8192, {"beta_fast": 16, "beta_slow": 2}),
    (128, 500000.0, 8.0, 4096, {"attention_factor": 1.5}),
    (128, 10000.0, 40.0, 4096, {"mscale": 0.707, "mscale_all_dim": 0.707}),
    (64, 10000.0, 4.0, 4096, {"mscale": 1.0, "mscale_all_dim": 0.5}),
    (64, 100000.0, 2.0, 8192, {"truncate": False}),
    (32, 10000.0, 3.0, 2048, {"beta_fast": 64, "beta_slow": 0.5, "truncate": False}),
]


@pytest.mark.parametrize("head_dim,base,factor,original,params", YARN_CASES)
def test_yarn_equals_transformers(head_dim, base, factor, original, params):
    rp = {
        "rope_type": "yarn",
        "factor": factor,
        "rope_theta": base,
        "original_max_position_embeddings": original,
    }
    expected = hf({**rp, **params}, head_dim, int(original * factor))
    assert_same(ours("yarn", head_dim, base, factor, original, **params), expected)


@pytest.mark.parametrize(
    "head_dim,base,factor,original,low,high",
    [
        (128, 500000.0, 8.0, 8192, 1.0, 4.0),  # Llama 3.1
        (64, 100000.0, 2.0, 8192, 1.0, 4.0),
        (64, 10000.0, 4.0, 2048, 2.0, 8.0),
        (16, 10000.0, 2.0, 256, 1.0, 2.0),
    ],
)
def test_llama3_equals_transformers(head_dim, base, factor, original, low, high):
    rp = {
        "rope_type": "llama3",
        "factor": factor,
        "rope_theta": base,
        "original_max_position_embeddings": original,
        "low_freq_factor": low,
        "high_freq_factor": high,
    }
    expected = hf(rp, head_dim, int(original * factor))
    got = ours(
        "llama3", head_dim, base, factor, original, low_freq_factor=low, high_freq_factor=high
    )
    assert_same(got, expected)
    # all three bands exist in the SmolLM2-like case: kept, smoothed and fully divided
    if (head_dim, base) == (64, 100000.0):
        default = default_inv_freq(head_dim, base)
        ratio = default / got.inv_freq
        assert ratio[0] == 1.0 and ratio[-1] == pytest.approx(factor)
        assert ((ratio > 1.0) & (ratio < factor * (1 - 1e-6))).any()


@pytest.mark.parametrize("seq_len", [None, 100, 256, 257, 5000])
@pytest.mark.parametrize("attention_factor", [None, 1.2])
def test_longrope_equals_transformers(seq_len, attention_factor):
    gen = torch.Generator().manual_seed(0)
    short = (1 + torch.rand(8, generator=gen)).tolist()
    long = (1 + 4 * torch.rand(8, generator=gen)).tolist()
    rp = {
        "rope_type": "longrope",
        "factor": 4.0,
        "rope_theta": 10000.0,
        "original_max_position_embeddings": 256,
        "short_factor": short,
        "long_factor": long,
    }
    params = {"short_factor": short, "long_factor": long}
    if attention_factor is not None:
        rp["attention_factor"] = attention_factor
        params["attention_factor"] = attention_factor
    expected = hf(rp, 16, 1024, seq_len)
    got = ours("longrope", 16, 10000.0, 4.0, 256, seq_len, **params)
    assert_same(got, expected)
    if attention_factor is None:
        assert got.attention_scaling == math.sqrt(1 + math.log(4.0) / math.log(256))


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dim,base,factor", [(16, 10000.0, 2.0), (64, 100000.0, 2.0), (128, 500000.0, 4.0)]
)
def test_ntk_closed_form(dim, base, factor):
    inv_freq, scale = ours("ntk", dim, base, factor, 8192)
    i = torch.arange(dim // 2, dtype=torch.float64)
    expected = base ** (-2 * i / dim) * factor ** (-2 * i / (dim - 2))
    torch.testing.assert_close(inv_freq.double(), expected, rtol=2e-6, atol=0)
    assert scale == 1.0
    assert ntk_base(base, factor, dim) == base * factor ** (dim / (dim - 2))
    default = default_inv_freq(dim, base)
    assert inv_freq[0] == default[0] == 1.0  # the highest frequency is untouched
    assert float(default[-1] / inv_freq[-1]) == pytest.approx(factor, rel=1e-5)  # the lowest is / s


def test_dynamic_is_ntk_with_an_effective_scale():
    dim, base, factor, original = 64, 100000.0, 2.0, 8192
    for seq_len in (None, 1, 4096, 8192):  # within the trained length: exactly the default RoPE
        assert torch.equal(
            ours("dynamic", dim, base, factor, original, seq_len).inv_freq,
            default_inv_freq(dim, base),
        )
    for seq_len in (12288, 16384, 40000):
        effective = factor * seq_len / original - (factor - 1)
        assert dynamic_ntk_base(base, factor, dim, original, seq_len) == ntk_base(
            base, effective, dim
        )
        assert torch.equal(
            ours("dynamic", dim, base, factor, original, seq_len).inv_freq,
            ours("ntk", dim, base, effective, original).inv_freq,
        )


def test_linear_and_yarn_limits():
    dim, base = 64, 100000.0
    default = default_inv_freq(dim, base)
    assert torch.equal(ours("linear", dim, base, 4.0, 8192).inv_freq, default / 4.0)
    inv, scale = ours("yarn", dim, base, 4.0, 8192)
    assert scale == pytest.approx(0.1 * math.log(4.0) + 1.0)
    assert inv[0] == default[0]  # fast dims extrapolate (unchanged)
    assert float(inv[-1]) == pytest.approx(float(default[-1]) / 4.0)  # slow dims interpolate


def test_registry_contents_and_custom_method():
    assert available_methods() == ("linear", "ntk", "dynamic", "yarn", "llama3", "longrope")
    assert get_method("yarn").params == (
        "beta_fast",
        "beta_slow",
        "attention_factor",
        "mscale",
        "mscale_all_dim",
        "truncate",
    )
    assert get_method("dynamic").length_dependent and not get_method("yarn").length_dependent
    assert get_method("ntk").rope_type == "default"

    @register("half")
    def _half(inputs):
        return rope_mod.RopeFrequencies(default_inv_freq(inputs.dim, inputs.base) / 2, 1.0)

    try:
        assert "half" in available_methods()
        assert torch.equal(
            compute("half", RopeInputs(16, 10000.0, 2.0, 256)).inv_freq,
            default_inv_freq(16, 10000.0) / 2,
        )
    finally:
        del rope_registry._REGISTRY["half"]
    with pytest.raises(ConfigError, match="reserved"):
        register("none")


def test_inputs_are_frozen_and_validated():
    inputs = RopeInputs(16, 10000.0, 2.0, 256, params={"beta_fast": 8})
    with pytest.raises(AttributeError):
        inputs.factor = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        inputs.params["beta_fast"] = 4  # type: ignore[index]
    for bad in (
        {"dim": 15},
        {"dim": 2},
        {"base": 1.0},
        {"original_length": 0},
        {"seq_len": 0},
    ):
        kwargs = {"dim": 16, "base": 10000.0, "factor": 2.0, "original_length": 256} | bad
        with pytest.raises(ConfigError):
            RopeInputs(**kwargs)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_unknown_method_lists_the_known_ones(tiny_llama):
    with pytest.raises(ConfigError) as info:
        scale_rope(tiny_llama, "ntk-by-parts", 2.0)
    message = str(info.value)
    assert "'ntk-by-parts'" in message
    for name in ("none", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"):
        assert name in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("factor", [1, 1.0, 0.5, -2, None, float("nan"), float("inf"), "2", True])
def test_factor_must_be_greater_than_one(tiny_llama, factor):
    with pytest.raises(ConfigError, match="> 1|finite number"):
        scale_rope(tiny_llama, "yarn", factor)
    assert tiny_llama.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


@pytest.mark.parametrize("method", ["linear", "ntk", "dynamic", "yarn", "llama3", "longrope"])
def test_pure_functions_reject_factor_one(method):
    with pytest.raises(ConfigError, match="RoPE scaling factor must be > 1 .* got 1.0"):
        compute(method, RopeInputs(16, 10000.0, 1.0, 256))


def test_unknown_and_missing_parameters(tiny_llama):
    with pytest.raises(
        ConfigError,
        match=r"unknown parameter\(s\) beta for RoPE method 'yarn'; accepted: beta_fast",
    ):
        scale_rope(tiny_llama, "yarn", 2.0, beta=3)
    with pytest.raises(ConfigError, match="longrope needs short_factor: a list of 8"):
        scale_rope(tiny_llama, "longrope", 2.0)
    with pytest.raises(ConfigError, match="must be 8 positive numbers"):
        scale_rope(tiny_llama, "longrope", 2.0, short_factor=[1.0] * 7, long_factor=[2.0] * 8)
    with pytest.raises(ConfigError, match="beta_fast > beta_slow"):
        scale_rope(tiny_llama, "yarn", 2.0, beta_fast=1, beta_slow=4)
    with pytest.raises(ConfigError, match="high_freq_factor > low_freq_factor"):
        scale_rope(tiny_llama, "llama3", 2.0, low_freq_factor=4.0, high_freq_factor=1.0)
    with pytest.raises(ConfigError, match="takes no parameters"):
        scale_rope(tiny_llama, "none", beta_fast=3)
    # a failed call leaves the model untouched
    assert tiny_llama.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


def test_model_without_rope_is_a_model_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64)
    )
    with pytest.raises(ModelError, match="no rotary position embedding"):
        scale_rope(model, "yarn", 2.0)
    with pytest.raises(ModelError), rope_length(model, 100):
        pass


# --------------------------------------------------------------------------------------------
# scale_rope on a loaded model
# --------------------------------------------------------------------------------------------

IDS = torch.randint(0, 128, (1, 400), generator=torch.Generator().manual_seed(1))
LONGROPE = {
    "short_factor": [1.0 + i / 16 for i in range(8)],
    "long_factor": [1.0 + i / 2 for i in range(8)],
}
METHODS = [
    ("linear", {}),
    ("ntk", {}),
    ("dynamic", {}),
    ("yarn", {}),
    ("yarn", {"beta_fast": 16, "beta_slow": 2, "attention_factor": 1.3}),
    ("llama3", {"low_freq_factor": 1.0, "high_freq_factor": 2.0}),
    ("longrope", LONGROPE),
]


@torch.inference_mode()
def logits(model, ids=IDS):
    return model(ids).logits


@pytest.mark.parametrize("method,params", METHODS)
def test_scale_rope_sets_config_and_buffers(tiny_llama, method, params):
    rotary = rotary_embedding(tiny_llama)
    exported = scale_rope(tiny_llama, method, 2.0, **params)
    assert tiny_llama.config.rope_parameters == exported
    assert rotary.config is tiny_llama.config
    expected, scale = compute(method, RopeInputs(16, 10000.0, 2.0, 256, params=params))
    assert torch.equal(rotary.inv_freq, expected)
    assert torch.equal(rotary.original_inv_freq, expected)
    assert rotary.attention_scaling == scale
    assert not torch.equal(expected, default_inv_freq(16, 10000.0)) or method == "dynamic"
    if method == "dynamic":
        assert exported == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
        assert tiny_llama.config.max_position_embeddings == 256  # dynamic reads L0 from it
        assert rotary.rope_type == "dynamic"
    elif method == "ntk":
        assert exported == {"rope_type": "default", "rope_theta": ntk_base(10000.0, 2.0, 16)}
        assert tiny_llama.config.max_position_embeddings == 512
    else:
        assert exported["rope_type"] == rotary.rope_type == method
        assert exported["factor"] == 2.0 and exported["original_max_position_embeddings"] == 256
        assert tiny_llama.config.max_position_embeddings == 512
    exported["rope_theta"] = 1.0  # the returned dict is a copy
    assert tiny_llama.config.rope_parameters["rope_theta"] != 1.0


@pytest.mark.parametrize("method,params", METHODS)
def test_scaled_model_equals_transformers_built_from_the_export(tiny_llama, method, params):
    """The dict scale_rope returns, put in a config, gives a model with bit-identical logits."""
    exported = scale_rope(tiny_llama, method, 2.0, **params)
    ours_logits = logits(tiny_llama)  # 400 tokens: past the trained 256, so dynamic/longrope switch
    config = LlamaConfig(**{**tiny_llama.config.to_dict(), "rope_parameters": exported})
    fresh = LlamaForCausalLM(config).eval()
    fresh.load_state_dict(tiny_llama.state_dict())
    assert torch.equal(logits(fresh), ours_logits)
    # and the scaling changed the model
    scale_rope(tiny_llama, "none")
    assert not torch.allclose(logits(tiny_llama), ours_logits)


def test_none_restores_identical_logits():
    model = make_tiny_llama()
    before = logits(model)
    rotary = rotary_embedding(model)
    state = (
        rotary.inv_freq.clone(),
        rotary.original_inv_freq.clone(),
        rotary.attention_scaling,
        rotary.rope_type,
    )
    for method, params in METHODS:
        scale_rope(model, method, 3.0, **params)
        logits(model)  # a long forward mutates dynamic/longrope state
    assert scale_rope(model, "none") == {"rope_type": "default", "rope_theta": 10000.0}
    assert torch.equal(logits(model), before)
    assert torch.equal(rotary.inv_freq, state[0]) and torch.equal(
        rotary.original_inv_freq, state[1]
    )
    assert (rotary.attention_scaling, rotary.rope_type) == state[2:]
    assert model.config.max_position_embeddings == 256
    assert not hasattr(rotary, "long_inv_freq")
    assert rope_mod.applied_scaling(model) is None


def test_rescaling_replaces_instead_of_compounding(tiny_llama):
    scale_rope(tiny_llama, "yarn", 4.0)
    scale_rope(tiny_llama, "linear", 2.0)
    assert torch.equal(rotary_embedding(tiny_llama).inv_freq, default_inv_freq(16, 10000.0) / 2.0)
    assert tiny_llama.config.max_position_embeddings == 512
    assert rope_mod.applied_scaling(tiny_llama) == {
        "method": "linear",
        "factor": 2.0,
        "seq_len": None,
        "params": {},
    }


def test_original_length_override(tiny_llama):
    exported = scale_rope(tiny_llama, "yarn", 2.0, original_length=128)
    assert exported["original_max_position_embeddings"] == 128
    expected = compute("yarn", RopeInputs(16, 10000.0, 2.0, 128)).inv_freq
    assert torch.equal(rotary_embedding(tiny_llama).inv_freq, expected)


# --------------------------------------------------------------------------------------------
# dynamic NTK and the KV cache
# --------------------------------------------------------------------------------------------


def cache_kw(model, cache) -> dict:
    """transformers renamed ``past_key_values`` to ``cache``; pass whichever this version takes."""
    import inspect

    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {key: cache, "use_cache": True}


@torch.inference_mode()
def chunked_logits(model, ids, split):
    """Prefill ids[:, :split] into a cache, then feed the rest on top; logits of the rest."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(ids[:, :split], **cache_kw(model, cache))
    return model(ids[:, split:], **cache_kw(model, cache)).logits


def test_dynamic_with_cache_trap_and_rope_length():
    model = make_tiny_llama()
    scale_rope(model, "dynamic", 2.0)
    full = logits(model)  # one forward of 400 tokens: the base for 400 everywhere
    # transformers' dynamic state only grows: after that forward a chunked run would reuse the
    # base for 400 by accident of history; re-scaling gives the fresh state a new model has
    scale_rope(model, "dynamic", 2.0)
    # the trap: the 300-token prefix is cached under the base for 300, the rest under 400
    stale = chunked_logits(model, IDS, 300)
    assert (stale - full[:, 300:]).abs().max() > 1e-3
    # a prefix shorter than the trained 256 is cached under the original base
    scale_rope(model, "dynamic", 2.0)
    assert (chunked_logits(model, IDS, 200)[:, 100:] - full[:, 300:]).abs().max() > 1e-3
    # rope_length: chunked prefill computes what the single forward computes
    scale_rope(model, "dynamic", 2.0)
    with rope_length(model, 400):
        consistent = chunked_logits(model, IDS, 300)
        assert rotary_embedding(model).rope_type == "default"  # frozen inside the block
        short_prefix = chunked_logits(model, IDS, 200)
    torch.testing.assert_close(consistent, full[:, 300:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(short_prefix, full[:, 200:], rtol=1e-5, atol=1e-5)


def test_rope_length_leaves_transformers_state_after_one_forward():
    model, reference = make_tiny_llama(), make_tiny_llama()
    for m in (model, reference):
        scale_rope(m, "dynamic", 2.0)
    logits(reference, IDS[:, :390])  # transformers' own update for a 390-token forward
    logits(model, IDS)  # grow model's state first: rope_length must start from the fresh state
    with rope_length(model, 390):
        pass
    ours_rot, ref_rot = rotary_embedding(model), rotary_embedding(reference)
    assert ours_rot.rope_type == "dynamic"
    assert torch.equal(ours_rot.inv_freq, ref_rot.inv_freq)
    assert ours_rot.max_seq_len_cached == ref_rot.max_seq_len_cached == 390


@torch.inference_mode()
def test_cached_decoding_after_rope_length_matches_generate_semantics():
    """Chunked prefill under rope_length + cached decoding == one prefill + cached decoding."""
    from transformers import DynamicCache

    def run(model, split):
        cache = DynamicCache(config=model.config)
        if split:
            with rope_length(model, 380):
                model(IDS[:, :split], **cache_kw(model, cache))
                out = model(IDS[:, split:380], **cache_kw(model, cache))
        else:
            out = model(IDS[:, :380], **cache_kw(model, cache))
        steps = [out.logits[:, -1]]
        for t in range(380, 385):  # base grows per decoded token, as in transformers' generate
            steps.append(model(IDS[:, t : t + 1], **cache_kw(model, cache)).logits[:, -1])
        return torch.stack(steps)

    one, two = make_tiny_llama(), make_tiny_llama()
    scale_rope(one, "dynamic", 2.0)
    scale_rope(two, "dynamic", 2.0)
    torch.testing.assert_close(run(two, 150), run(one, 0), rtol=1e-5, atol=1e-5)


def test_frozen_dynamic_is_cache_consistent_and_exports_a_fixed_base(tiny_llama):
    per_forward = make_tiny_llama()
    scale_rope(per_forward, "dynamic", 2.0)
    full_dynamic = logits(per_forward)
    exported = scale_rope(tiny_llama, "dynamic", 2.0, seq_len=400)
    assert exported == {
        "rope_type": "default",
        "rope_theta": dynamic_ntk_base(10000.0, 2.0, 16, 256, 400),
    }
    rotary = rotary_embedding(tiny_llama)
    assert rotary.rope_type == "default"
    assert torch.equal(
        rotary.inv_freq, compute("dynamic", RopeInputs(16, 10000.0, 2.0, 256, 400)).inv_freq
    )
    frozen = logits(tiny_llama)
    torch.testing.assert_close(
        frozen, full_dynamic, rtol=1e-5, atol=1e-5
    )  # same base as one 400-token forward
    torch.testing.assert_close(
        chunked_logits(tiny_llama, IDS, 300), frozen[:, 300:], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        chunked_logits(tiny_llama, IDS, 100), frozen[:, 100:], rtol=1e-5, atol=1e-5
    )


def test_frozen_longrope_picks_one_factor_list(tiny_llama):
    exported = scale_rope(tiny_llama, "longrope", 2.0, seq_len=400, **LONGROPE)
    assert exported["short_factor"] == exported["long_factor"] == LONGROPE["long_factor"]
    exported = scale_rope(tiny_llama, "longrope", 2.0, seq_len=200, **LONGROPE)
    assert exported["short_factor"] == exported["long_factor"] == LONGROPE["short_factor"]


def test_rope_length_is_a_no_op_for_static_methods(tiny_llama):
    scale_rope(tiny_llama, "yarn", 2.0)
    rotary = rotary_embedding(tiny_llama)
    before = rotary.inv_freq.clone()
    with rope_length(tiny_llama, 10_000):
        assert torch.equal(rotary.inv_freq, before) and rotary.rope_type == "yarn"
    assert torch.equal(rotary.inv_freq, before)
    with pytest.raises(ConfigError), rope_length(tiny_llama, 0):
        pass


# --------------------------------------------------------------------------------------------
# llama.cpp flags
# --------------------------------------------------------------------------------------------


def test_llamacpp_flags(tiny_llama):
    assert to_llamacpp_flags(scale_rope(tiny_llama, "linear", 2.0)) == [
        "--rope-scaling", "linear", "--rope-scale", "2", "--rope-freq-base", "10000",
    ]
    assert to_llamacpp_flags(scale_rope(tiny_llama, "ntk", 2.0), ctx_size=512) == [
        "--rope-scaling",
        "none",
        "--rope-freq-base",
        repr(ntk_base(10000.0, 2.0, 16)),
        "--ctx-size",
        "512",
    ]
    assert to_llamacpp_flags(scale_rope(tiny_llama, "yarn", 4.0)) == [
        "--rope-scaling",
        "yarn",
        "--rope-scale",
        "4",
        "--rope-freq-base",
        "10000",
        "--yarn-orig-ctx",
        "256",
    ]
    custom = scale_rope(tiny_llama, "yarn", 4.0, beta_fast=16, beta_slow=2, attention_factor=1.5)
    flags = to_llamacpp_flags(custom, architecture="llama")
    assert flags[-6:] == [
        "--yarn-beta-fast",
        "16",
        "--yarn-beta-slow",
        "2",
        "--override-kv",  # llama.cpp overwrites --yarn-attn-factor when YaRN is on
        f"llama.rope.scaling.attn_factor=float:{1.5 / (0.1 * math.log(4.0) + 1)!r}",
    ]
    with pytest.raises(ConfigError, match="pass architecture="):
        to_llamacpp_flags(custom)
    assert to_llamacpp_flags(scale_rope(tiny_llama, "none")) == [
        "--rope-scaling",
        "none",
        "--rope-freq-base",
        "10000",
    ]
    frozen = scale_rope(tiny_llama, "dynamic", 2.0, seq_len=512)
    assert to_llamacpp_flags(frozen)[:3] == ["--rope-scaling", "none", "--rope-freq-base"]


@pytest.mark.parametrize(
    "method,params,reason",
    [
        ("dynamic", {}, "no length-dependent RoPE base"),
        ("llama3", {}, "rope_freqs tensor"),
        ("longrope", LONGROPE, "written into the GGUF"),
        ("yarn", {"truncate": False}, "always truncates"),
    ],
)
def test_llamacpp_has_no_equivalent(tiny_llama, method, params, reason):
    with pytest.raises(ConfigError, match="no llama.cpp equivalent") as info:
        to_llamacpp_flags(scale_rope(tiny_llama, method, 2.0, **params))
    assert reason in str(info.value)


def test_state_set_under_inference_mode_stays_usable_for_training(tiny_llama):
    scale_rope(tiny_llama, "dynamic", 2.0)
    with torch.inference_mode():
        with rope_length(tiny_llama, 400):
            pass
        scale_rope(tiny_llama, "yarn", 2.0)
    rotary = rotary_embedding(tiny_llama)
    assert not rotary.inv_freq.is_inference() and not rotary.original_inv_freq.is_inference()
    tiny_llama.train()
    loss = tiny_llama(IDS[:, :64], labels=IDS[:, :64]).loss
    loss.backward()  # no "inference tensors cannot be saved for backward"
    assert tiny_llama.model.layers[0].self_attn.q_proj.weight.grad is not None
