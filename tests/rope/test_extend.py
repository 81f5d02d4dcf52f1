"""Self-Extend and Dual Chunk Attention: the blockwise attention function against the dense
float64 statement of the formulas (tests/extend_oracle.py) at window, chunk and block edges, on
both kernels; the whole tiny Llama against the oracle; chunked prefill and cached decoding
against one full forward; apply / restore; the parameter rules; errors; the evaluations and the
server window.

Tolerances: attention outputs within 2e-5 of the float64 oracle (fp32 inputs of unit scale);
logits within 1e-4 (two layers of fp32 rounding).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama
from extend_oracle import TRAINED, dense_attention, distance
from test_rope_eval import TOK, reference_answers

from contextwindow.errors import ConfigError, ModelError
from contextwindow.evaluate.chunked import estimate_memory
from contextwindow.evaluate.passkey import passkey_retrieval
from contextwindow.rope import (
    applied_scaling,
    available_extensions,
    plan_extension,
    scale_rope,
    to_llamacpp_flags,
)
from contextwindow.rope import extended_attention as ext
from contextwindow.rope.extended_attention import (
    EXTENDED_ATTENTION,
    ExtendedState,
    extended_forward,
    extension_state,
)

SE = ("self-extend", {"group_size": 4, "window": 32})  # reaches (256 - 32) * 4 + 32 = 928
SED = ("self-extend-dynamic", {"group_size": 4, "window": 32})  # the window widens to 256
DCA = ("dca", {"chunk_size": 48, "local_window": 8})  # chunks of 40 positions
METHODS = [SE, SED, DCA]
IDS = [method for method, _ in METHODS]


def plan(method, params):
    return plan_extension(method, TRAINED, None, params)


def inv_freq(dim=16, base=10000.0):
    return 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def qkv(n, k_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, n, 16, generator=g), torch.randn(1, 2, k_len, 16, generator=g),
            torch.randn(1, 2, k_len, 16, generator=g))


# --------------------------------------------------------------------------------------------
# the attention function == the dense formula
# --------------------------------------------------------------------------------------------


def test_distances_stay_in_the_trained_range_and_match_the_map():
    i = torch.arange(900)[:, None]
    j = torch.arange(900)[None]
    causal = j <= i
    for method, params in METHODS:
        d = distance(method, params, i, j)
        assert int(d[causal].max()) < TRAINED and int(d[causal].min()) >= 0
        assert torch.equal(plan(method, params).map.relative(i, j)[causal], d[causal])
    se = distance(*SE[:1], SE[1], i, j)
    assert int(se[100, 100 - 31]) == 31 and int(se[100, 100 - 32]) == 32  # continuous at w
    assert int(se[899, 0]) == 899 // 4 + 32 - 8  # the grouped query position minus 0
    dynamic = distance(*SED[:1], SED[1], i, j)
    assert torch.equal(dynamic[:TRAINED][causal[:TRAINED]], (i - j)[:TRAINED][causal[:TRAINED]])
    assert int(dynamic[300, 0]) == TRAINED - 1  # past L, the farthest key at L - 1 exactly
    # w(300) = 240 (R = 255 - 75 = 180, 180 + 180 // 3): exact below it, continuous at it
    assert int(dynamic[300, 300 - 239]) == 239 and int(dynamic[300, 300 - 240]) == 240
    assert int(dynamic[300, 50]) == TRAINED - 1 - 50 // 4  # grouped: 243, not 250
    wide = distance("self-extend", SE[1], i, j)  # from the reach on, the paper's map
    assert torch.equal(dynamic[928:][causal[928:]], wide[928:][causal[928:]])
    dca = distance(*DCA[:1], DCA[1], i, j)
    assert int(dca[45, 39]) == 6  # successive chunk, within the local window: exact
    assert int(dca[79, 0]) == 48  # successive, past it: clamped query 48 - key 0
    assert int(dca[120, 0]) == 48 and int(dca[120, 39]) == 9  # inter-chunk: 48 - j mod 40


CASES = [  # (queries, keys, first key position): full prefill, chunks, decode, offset keys,
    # positions past the first 4,096 of the rotation tables (they grow)
    (150, 150, 0), (37, 150, 0), (1, 150, 0), (1, 41, 0), (40, 80, 0), (33, 120, 20),
    (20, 100, 5000), (64, 500, 0), (1, 700, 0),  # past L and before the reach: windows narrow
]


@pytest.mark.parametrize("method,params", METHODS, ids=IDS)
@pytest.mark.parametrize("block,fused", [(1, True), (5, True), (1024, True), (7, False),
                                         (1024, False)])
def test_blockwise_attention_equals_the_dense_formula(method, params, block, fused):
    """Blocks of 1, 5 and 7 queries start and end on every side of the window (32) and chunk
    (40) edges; 1,024 is one block. ``fused``: PyTorch's CPU kernel, else the tiled matmul."""
    state = ExtendedState(plan(method, params).map, inv_freq(), block=block, fused=fused)
    for n, k_len, first in CASES:
        q, k, v = qkv(n, k_len, seed=n + k_len)
        got = extended_forward(state, q, k, v, first, 0.25)
        want = dense_attention(method, params, inv_freq(), q, k, v, first, 0.25)
        assert got.dtype == torch.float32 and got.shape == (1, 4, n, 16)
        assert torch.allclose(got.double(), want, atol=2e-5), (n, k_len, first)


@pytest.mark.parametrize("method,params", METHODS, ids=IDS)
def test_no_piece_is_larger_than_a_block(method, params, monkeypatch):
    """O(n x block) memory: every masked piece is at most block x block (twice that for the
    dynamic window, whose edge also moves as the window narrows: by up to G / (G - 1) keys a
    query), every piece has at most block queries, and the pieces cover each causal pair
    exactly once."""
    pieces = []
    real = ext._attend
    edge = 2 if method == "self-extend-dynamic" else 1

    def spy(state, q, k, v, mask, scale):
        pieces.append((q.shape[-2], k.shape[-2], None if mask is None else mask.sum()))
        if mask is not None:
            assert mask.numel() <= edge * state.block**2
        return real(state, q, k, v, mask, scale)

    monkeypatch.setattr(ext, "_attend", spy)
    state = ExtendedState(plan(method, params).map, inv_freq(), block=16)
    q, k, v = qkv(300, 300)
    extended_forward(state, q, k, v, 0, 0.25)
    assert max(rows for rows, _, _ in pieces) <= 16
    covered = sum(int(m) if m is not None else rows * keys for rows, keys, m in pieces)
    assert covered == 300 * 301 // 2


# --------------------------------------------------------------------------------------------
# the whole model: oracle, chunked prefill, cached decoding
# --------------------------------------------------------------------------------------------

ORACLE = "test_dense_extension"


def oracle_attention(module, query, key, value, attention_mask, scaling=None, position_ids=None,
                     **kwargs):
    method, params, freqs = module.oracle
    first = int(position_ids[0, -1]) - key.shape[-2] + 1
    out = dense_attention(method, params, freqs, query, key, value, first, scaling)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def oracle_model(method, params):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(ORACLE, oracle_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ORACLE, lambda **kwargs: None)
    model = make_tiny_llama()
    model.set_attn_implementation(ORACLE)
    for layer in model.model.layers:
        layer.self_attn.oracle = (method, params, model.model.rotary_emb.inv_freq)
    return model


def extended_model(method, params, block=64):
    model = make_tiny_llama()
    scale_rope(model, method, **params)
    extension_state(model).block = block  # small blocks: several per chunk of 100 tokens
    return model


def ids(n, seed=1):
    return torch.randint(0, 128, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method,params", METHODS, ids=IDS)
def test_model_forward_equals_the_oracle_model(method, params):
    x = ids(300)
    with torch.inference_mode():
        want = oracle_model(method, params)(x).logits
        got = extended_model(method, params)(x).logits
        plain = make_tiny_llama()(x).logits
    assert torch.allclose(got, want, atol=1e-4)
    # it does change attention (the dynamic window only past L, and there only the few
    # farthest keys at first: small changes)
    changed, atol = (TRAINED, 1e-5) if method == "self-extend-dynamic" else (40, 1e-3)
    assert not torch.allclose(got[0, changed:], plain[0, changed:], atol=atol)


def test_dynamic_self_extend_in_range_is_the_unscaled_model():
    """Within the trained length every window holds every key: the logits are the plain
    model's (SDPA), to fp32 rounding, while Self-Extend's are not."""
    x = ids(TRAINED)
    with torch.inference_mode():
        plain = make_tiny_llama()(x).logits
        dynamic = extended_model(*SED)(x).logits
        paper = extended_model(*SE)(x).logits
    assert torch.allclose(dynamic, plain, atol=1e-5)
    assert not torch.allclose(paper[0, 40:], plain[0, 40:], atol=1e-3)


@pytest.mark.parametrize("method,params", METHODS, ids=IDS)
def test_chunked_prefill_and_decoding_equal_one_forward(method, params):
    from transformers import DynamicCache

    model = extended_model(method, params)
    x = ids(310)
    with torch.inference_mode():
        full = model(x).logits
        cache, pieces, start = DynamicCache(config=model.config), [], 0
        for size in (100, 1, 77, 122, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1):  # prefill, then decode
            pieces.append(model(x[:, start:start + size], cache=cache, use_cache=True).logits)
            start += size
    assert start == 310 and cache.get_seq_length() == 310
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-4)


def test_generate_numbers_positions_like_a_manual_loop():
    model = extended_model(*SE)
    prompt = ids(290)
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                             do_sample=False, pad_token_id=127)
        manual = prompt
        for _ in range(6):
            manual = torch.cat([manual, model(manual).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(out, manual)


# --------------------------------------------------------------------------------------------
# apply, restore, the parameter rules, export
# --------------------------------------------------------------------------------------------


def test_apply_and_restore():
    model, x = make_tiny_llama(), ids(300)
    with torch.inference_mode():
        plain = model(x).logits
        params = scale_rope(model, "self-extend", group_size=4, window=32)
        assert params == {"rope_type": "self-extend", "factor": 928 / 256,
                          "original_max_position_embeddings": 256, "rope_theta": 10000.0,
                          "group_size": 4, "window": 32}
        assert model.config._attn_implementation == EXTENDED_ATTENTION
        assert model.config.max_position_embeddings == 928
        assert applied_scaling(model)["params"] == {"group_size": 4, "window": 32}
        scale_rope(model, "dca", 2.0)  # replaces, never stacks
        assert model.config.max_position_embeddings == 512
        assert extension_state(model).map.unit == 192 - 16
        scale_rope(model, "yarn", 2.0)  # a frequency method runs the model's own attention
        assert model.config._attn_implementation == "sdpa" and extension_state(model) is None
        yarn = make_tiny_llama()
        scale_rope(yarn, "yarn", 2.0)
        assert torch.equal(model(x).logits, yarn(x).logits)
        scale_rope(model, "self-extend", 4)
        scale_rope(model, "none")
        assert torch.equal(model(x).logits, plain)
    assert model.config._attn_implementation == "sdpa"
    assert model.config.max_position_embeddings == 256 and applied_scaling(model) is None


def test_parameter_rules_for_a_target_length():
    # Self-Extend, L = 8192: w = L/4, the smallest G keeping w + (N - w)/G within 2/3 of L
    for factor, group in ((2, 5), (4, 9), (8, 19)):
        p = plan_extension("self-extend", 8192, factor, {})
        assert dict(p.params) == {"group_size": group, "window": 2048}
        n = 8192 * factor
        top = 2048 * group + n - 2048  # the largest grouped position, times G
        assert 8192 * group <= 2 * top and 3 * top <= 2 * 8192 * group
        assert (8192 - 2048) * group + 2048 >= n and p.length == n and p.factor == factor
    assert dict(plan_extension("self-extend", 8192, 4, {"window": 1024}).params) == {
        "group_size": 8, "window": 1024}
    # explicit parameters, no factor: the window is their reach
    assert plan_extension("self-extend", 8192, None, {"group_size": 4, "window": 1024}).length \
        == (8192 - 1024) * 4 + 1024
    # DCA: ChunkLlama's 3L/4 and L/16 whatever the length
    dca = plan_extension("dca", 8192, 4, {})
    assert dict(dca.params) == {"chunk_size": 6144, "local_window": 512} and dca.length == 32768
    assert plan_extension("dca", 8192, None, {}).length == 32768  # the default factor, 4
    assert available_extensions() == ("self-extend", "self-extend-dynamic", "dca")
    dynamic = plan_extension("self-extend-dynamic", 8192, 4, {})  # the same rules and reach
    assert dict(dynamic.params) == {"group_size": 9, "window": 2048} and dynamic.length == 32768


@pytest.mark.parametrize("method,factor,params,message", [
    ("self-extend", None, {"group_size": 1, "window": 32}, "group_size must be an integer >= 2"),
    ("self-extend", None, {"group_size": 4, "window": 0}, "window must be an integer between"),
    ("self-extend", None, {"group_size": 4, "window": 256}, "window must be an integer between"),
    ("self-extend", 2.0, {"group_size": 2.5}, "group_size must be an integer"),
    ("self-extend", 8.0, {"group_size": 2, "window": 32}, "reaches 480 tokens, fewer than"),
    ("self-extend", 2.0, {"groups": 2}, "unknown parameter(s) groups for 'self-extend'"),
    ("self-extend", 1.0, {}, "must be > 1"),
    ("dca", None, {"chunk_size": 256, "local_window": 8}, "chunk_size must be an integer between"),
    ("dca", None, {"chunk_size": 48, "local_window": 48}, "local_window must be an integer"),
])
def test_invalid_parameters(method, factor, params, message):
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scale_rope(model, method, factor, **params)
    assert model.config._attn_implementation == "sdpa"  # a failed call changes nothing
    assert model.config.max_position_embeddings == 256


def test_errors_for_models_inputs_and_export():
    model = make_tiny_llama()
    with pytest.raises(ConfigError, match="seq_len does not apply"):
        scale_rope(model, "self-extend", 4.0, seq_len=1000)
    sliding = make_tiny_llama(sliding_window=64, layer_types=["sliding_attention"] * 2)
    with pytest.raises(ModelError, match="sliding-window layers"):
        scale_rope(sliding, "dca", 2.0)
    params = scale_rope(model, "self-extend", 2.0)
    with pytest.raises(ConfigError, match="different algorithm"):
        to_llamacpp_flags(params)
    with pytest.raises(ConfigError, match="vLLM removed its backend"):
        to_llamacpp_flags(scale_rope(model, "dca", 2.0))
    padded = torch.tensor([[1, 1, 1, 0]])
    with torch.inference_mode(), pytest.raises(ModelError, match="padded batches"):
        model(ids(4), attention_mask=padded)
    with torch.inference_mode(), pytest.raises(ModelError, match="consecutive position ids"):
        model(ids(4), position_ids=torch.tensor([[0, 1, 5, 6]]))
    from transformers import StaticCache

    static = StaticCache(config=model.config, max_cache_len=64)
    with torch.inference_mode(), pytest.raises(ModelError, match="use a DynamicCache"):
        model(ids(8), cache=static, use_cache=True)
    from contextwindow.kv import ScoredCache, TOVAPolicy

    with pytest.raises(ModelError, match="which a scored cache cannot score"):
        ScoredCache(model, TOVAPolicy(budget=64))  # it would switch the model back to SDPA
    assert model.config._attn_implementation == EXTENDED_ATTENTION
    bare = make_tiny_llama()
    bare.set_attn_implementation(EXTENDED_ATTENTION)
    with torch.inference_mode(), pytest.raises(ModelError, match="has no position map"):
        bare(ids(4))


# --------------------------------------------------------------------------------------------
# where users use it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,params", METHODS, ids=IDS)
def test_passkey_with_a_shared_prefix_equals_plain_greedy_decoding(method, params):
    model = extended_model(method, params)
    result = passkey_retrieval(model, TOK, 330, 0.4, 3, seed=5, max_new_tokens=6, prefill_chunk=64)
    assert list(result.answers) == reference_answers(model, 330, 0.4, 3, 5, 6, cached=False)


def test_memory_estimate_counts_no_score_matrix():
    sdpa, extended = make_tiny_llama(), extended_model(*DCA)
    assert estimate_memory(extended, 32768) == estimate_memory(sdpa, 32768)


def test_cli_passkey_runs_the_extensions(tiny_chat_dir, tmp_path):
    import json

    from contextwindow.cli import main
    from contextwindow.cli.rope import _parse_methods

    known = "known methods: none, linear.*self-extend, self-extend-dynamic, dca"
    with pytest.raises(ConfigError, match=known):
        _parse_methods("none,bogus", 4.0)
    out = tmp_path / "passkey.json"
    assert main(["passkey", "--model", str(tiny_chat_dir), "--lengths", "100", "--trials", "1",
                 "--methods", "none,yarn,dynamic,self-extend,dca", "--factor", "4",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["none", "yarn", "dynamic", "self-extend", "dca"]
    assert all(results[m]["100"]["trials"] == 1 for m in results)


def test_serve_rope_self_extend_advertises_the_extended_window(tiny_chat_dir):
    """``serve --rope self-extend`` (no factor: 4x): the local backend's window is 4 x 8,192,
    and replies decode on the sink cache exactly as full forwards would."""
    from rich.console import Console

    from contextwindow.cli.serve import _describe_local, _local_backend
    from contextwindow.generation import SamplingParams

    options = {"engine": "transformers", "device": None, "dtype": None, "context": None,
               "policy": "trim",
               "keep_first": None, "sink_cache": True, "sinks": 4, "prefix_cache_mb": 0,
               "cache_policy": None, "served_model_name": None, "threads": None,
               "console": Console(quiet=True)}
    with pytest.raises(ConfigError, match="go together"):
        _local_backend(str(tiny_chat_dir), rope="yarn", rope_factor=None, **options)
    backend = _local_backend(str(tiny_chat_dir), rope="self-extend", rope_factor=None, **options)
    try:
        generator = backend.generator
        assert backend.window == generator.context == 4 * 8192
        assert "RoPE self-extend x4" in _describe_local(generator, "self-extend", None)
        assert generator.model.config._attn_implementation == EXTENDED_ATTENTION
        fit = generator.fit([{"role": "user", "content": "hello there"}], 4)
        reply = generator.generate(fit, SamplingParams(max_tokens=4, temperature=0, seed=0))
    finally:
        backend.worker.close()
    tokens = list(fit.prompt_ids)
    with torch.inference_mode():
        for _ in range(len(reply.token_ids)):
            tokens.append(int(generator.model(torch.tensor([tokens])).logits[0, -1].argmax()))
    assert reply.token_ids == tokens[len(fit.prompt_ids):] and reply.completion_tokens >= 1
