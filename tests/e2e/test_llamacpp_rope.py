"""The RoPE registry's llama.cpp flags, run inside llama.cpp.

For every method the registry exports, llama.cpp given exactly the flags ``to_llamacpp_flags``
prints and our ``scale_rope`` on the same GGUF must give the same log-likelihood at every
position of the same token ids. llama.cpp runs the GGUF dequantised to float32 by its own
quantizer with a float32 KV cache (``benchmarks/llamacpp_logprobs.py``): the weights are then
the values transformers dequantises, and the only difference left is float32 rounding
(``bench_llamacpp_rope.TOLERANCE`` says how it was derived from the no-scaling gap). On the Q4_1
file as shipped, llama.cpp's 8-bit activations alone differ by up to 0.57 nats at a position:
that comparison is the benchmark's (``benchmarks/bench_llamacpp_rope.py``, docs/rope.md).

Each scaled run must also move llama.cpp's own output far from its unscaled output, so a flag
that llama.cpp ignores (as it ignores ``--yarn-attn-factor`` with YaRN on) fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_text
from llamacpp import llama_python

from contextwindow.models.hf import encode_prefix
from contextwindow.rope import get_extension, get_method

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_llamacpp_rope as bench

pytestmark = pytest.mark.slow

TOKENS = 256  # short enough for one llama.cpp pass per case in seconds; factor 4 moves it
FACTOR = 4.0
#: What llama.cpp can express: every exportable path of the registry (a fixed base, a linear
#: scale, YaRN with its defaults and with beta / attention-factor flags).
EXPORTED = ("none", "linear", "ntk", "dynamic, frozen", "yarn", "yarn, custom")
NOT_EXPORTED = ("dynamic", "llama3", "longrope", "self-extend", "dca")


@pytest.fixture(scope="module")
def measured(smollm2: tuple[Any, Any]) -> dict[str, dict[str, Any]]:
    import torch

    model, tokenizer = smollm2
    assert next(model.parameters()).dtype == torch.float32  # our side of the comparison
    ids = encode_prefix(tokenizer, corpus_text(), TOKENS)
    assert len(ids) == TOKENS
    return bench.measure(model, ids, FACTOR, python=llama_python(), threads=2,
                         precisions=("f32",))


def test_the_registry_exports_exactly_these_methods(measured):
    assert tuple(label for label, row in measured.items() if "llamacpp_flags" in row) == EXPORTED
    assert tuple(label for label, row in measured.items() if "unsupported" in row) == NOT_EXPORTED


def test_the_no_scaling_gap_is_far_below_the_tolerance(measured):
    assert measured["none"]["llamacpp_flags"] == ["--rope-scaling", "none",
                                                  "--rope-freq-base", "100000"]
    for statistic, tolerance in bench.TOLERANCE.items():
        assert measured["none"]["f32"][statistic] <= tolerance / 10


@pytest.mark.parametrize("label", EXPORTED[1:])
def test_llamacpp_with_the_exported_flags_computes_what_scale_rope_computes(measured, label):
    row = measured[label]
    for statistic, tolerance in bench.TOLERANCE.items():
        assert row["f32"][statistic] <= tolerance, (label, row["llamacpp_flags"], row["f32"])
        # the flags moved llama.cpp's own output by far more than the tolerance
        assert row["llamacpp_change_vs_none"]["f32"][statistic] >= 100 * tolerance
    assert abs(row["f32"]["nll_ours"] - row["f32"]["nll_llamacpp"]) <= bench.TOLERANCE["mean"]


def test_a_custom_yarn_attention_factor_reaches_llamacpp_as_a_gguf_override(measured):
    flags = measured["yarn, custom"]["llamacpp_flags"]
    assert "--yarn-attn-factor" not in flags  # llama.cpp overwrites it when YaRN is on
    assert flags[flags.index("--override-kv") + 1].startswith("llama.rope.scaling.attn_factor=")
    moved = measured["yarn, custom"]["llamacpp_change_vs_none"]["f32"]["mean"]
    assert moved > 2 * measured["yarn"]["llamacpp_change_vs_none"]["f32"]["mean"]


@pytest.mark.parametrize("label", NOT_EXPORTED)
def test_what_llamacpp_cannot_express_keeps_the_registrys_reason(measured, label):
    method = measured[label]["method"]
    extension = get_extension(method)
    reason = extension.unsupported if extension is not None else get_method(method).llamacpp
    assert isinstance(reason, str)
    assert measured[label]["unsupported"].endswith(reason)
