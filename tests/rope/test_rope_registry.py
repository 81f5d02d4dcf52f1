"""The RoPE registry carries each method's export: a method registered here is applied and
exported by scale_rope / to_llamacpp_flags with no change anywhere else, and every built-in method
either gives llama.cpp flags or raises the ConfigError with its documented reason."""

from __future__ import annotations

import math

import pytest
import torch

from contextwindow.errors import ConfigError
from contextwindow.models import rotary_embedding
from contextwindow.rope import (
    RopeConfig,
    RopeFrequencies,
    RopeInputs,
    applied_scaling,
    available_methods,
    check_factor,
    default_inv_freq,
    get_method,
    register,
    rope_length,
    scale_rope,
    to_llamacpp_flags,
)
from contextwindow.rope.registry import _REGISTRY

LONGROPE = {"short_factor": [1.0 + i / 16 for i in range(8)],
            "long_factor": [1.0 + i / 2 for i in range(8)]}
BUILT_IN_PARAMS = {"longrope": LONGROPE}


@pytest.fixture
def registry():
    """Restore the registry after a test registers its own methods."""
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def _toy_frequencies(inputs: RopeInputs) -> RopeFrequencies:
    return RopeFrequencies(default_inv_freq(inputs.dim, inputs.base * inputs.factor), 1.25)


def _toy_config(inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
    parameters = {"rope_type": "toy", "rope_theta": inputs.base * inputs.factor,
                  "boost": inputs.params.get("boost", 0)}
    return RopeConfig(parameters, 3 * inputs.original_length)


def _toy_flags(rope_parameters, architecture):
    return ["--toy-base", str(rope_parameters["rope_theta"])]


def test_registered_method_applies_and_exports_through_its_own_builders(tiny_llama, registry):
    register("toy", params=("boost",), export=_toy_config, llamacpp=_toy_flags)(_toy_frequencies)
    assert available_methods()[-1] == "toy"
    unscaled = tiny_llama(torch.arange(32)[None]).logits

    exported = scale_rope(tiny_llama, "toy", 2.0, boost=7)
    assert exported == {"rope_type": "toy", "rope_theta": 20000.0, "boost": 7}
    assert tiny_llama.config.rope_parameters == exported
    assert tiny_llama.config.max_position_embeddings == 768
    rotary = rotary_embedding(tiny_llama)
    assert torch.equal(rotary.inv_freq, default_inv_freq(16, 20000.0))
    assert torch.equal(rotary.original_inv_freq, default_inv_freq(16, 20000.0))
    assert rotary.attention_scaling == 1.25 and rotary.rope_type == "toy"
    assert rotary.max_seq_len_cached == 768
    assert applied_scaling(tiny_llama) == {
        "method": "toy", "factor": 2.0, "seq_len": None, "params": {"boost": 7},
    }
    scaled = tiny_llama(torch.arange(32)[None]).logits
    assert torch.isfinite(scaled).all() and not torch.allclose(scaled, unscaled)
    assert to_llamacpp_flags(exported, ctx_size=768) == [
        "--toy-base", "20000.0", "--ctx-size", "768",
    ]

    scale_rope(tiny_llama, "none")
    assert torch.equal(rotary_embedding(tiny_llama).inv_freq, default_inv_freq(16, 10000.0))
    assert torch.equal(tiny_llama(torch.arange(32)[None]).logits, unscaled)


def test_registered_method_without_builders_gets_the_generic_export(tiny_llama, registry):
    register("plain", params=("width", "depth"))(_toy_frequencies)
    exported = scale_rope(tiny_llama, "plain", 4.0, width=3, depth=None)
    assert exported == {
        "rope_type": "plain",
        "factor": 4.0,
        "original_max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "width": 3,
    }
    assert tiny_llama.config.max_position_embeddings == 1024
    with pytest.raises(ConfigError) as info:
        to_llamacpp_flags(exported)
    assert str(info.value) == (
        "no llama.cpp equivalent for 'plain': no llama.cpp flags are registered for RoPE method "
        "'plain'"
    )


def test_unknown_parameter_of_a_registered_method_changes_nothing(tiny_llama, registry):
    register("plain", params=("width",))(_toy_frequencies)
    with pytest.raises(ConfigError, match="accepted: width"):
        scale_rope(tiny_llama, "plain", 4.0, depth=3)
    assert applied_scaling(tiny_llama) is None
    assert tiny_llama.config.rope_parameters["rope_type"] == "default"


def test_length_dependence_comes_from_the_registry():
    flags = {name: get_method(name).length_dependent for name in available_methods()}
    assert flags == {"linear": False, "ntk": False, "dynamic": True, "yarn": False,
                     "llama3": False, "longrope": True}


@pytest.mark.parametrize("name", ["linear", "ntk", "dynamic", "yarn", "llama3", "longrope"])
def test_every_built_in_method_exports_llamacpp_flags_or_its_reason(tiny_llama, name):
    assert name in available_methods()
    exported = scale_rope(tiny_llama, name, 2.0, **BUILT_IN_PARAMS.get(name, {}))
    reason = get_method(name).llamacpp
    if name in ("dynamic", "llama3", "longrope"):
        assert isinstance(reason, str)
        with pytest.raises(ConfigError) as info:
            to_llamacpp_flags(exported)
        assert str(info.value) == f"no llama.cpp equivalent for {name!r}: {reason}"
    else:
        flags = to_llamacpp_flags(exported)
        scaling = {"linear": "linear", "ntk": "none", "yarn": "yarn"}[name]
        assert flags[:2] == ["--rope-scaling", scaling]
        base = float(flags[flags.index("--rope-freq-base") + 1])
        assert base == pytest.approx(exported["rope_theta"], rel=1e-15)


def test_frozen_length_dependent_methods_export_llamacpp_flags(tiny_llama):
    exported = scale_rope(tiny_llama, "dynamic", 2.0, seq_len=512)
    effective = 2.0 * 512 / 256 - 1.0
    base = 10000.0 * effective ** (16 / 14)
    assert exported == {"rope_type": "default", "rope_theta": base}
    assert to_llamacpp_flags(exported) == ["--rope-scaling", "none", "--rope-freq-base", repr(base)]
    rotary = rotary_embedding(tiny_llama)
    frozen = rotary.inv_freq.clone()
    assert torch.equal(frozen, default_inv_freq(16, base))
    with rope_length(tiny_llama, 2048):  # a frozen module no longer follows the length
        assert rotary.rope_type == "default" and torch.equal(rotary.inv_freq, frozen)


def test_check_factor_is_public_and_strict():
    assert check_factor("linear", 2) == 2.0 and isinstance(check_factor("linear", 2), float)
    for bad, message in [(None, "needs a scaling factor"), (True, "must be a number"),
                         (math.nan, "must be a number"), (1.0, "must be > 1"), ("2", "number")]:
        with pytest.raises(ConfigError, match=message):
            check_factor("linear", bad)
