"""The built-in scaling methods: linear, NTK-aware, dynamic NTK, YaRN, Llama-3 and LongRoPE.

Each is a pure function of :class:`RopeInputs` registered together with its export: the
``rope_parameters`` transformers / vLLM need to rebuild the same frequencies, and its llama.cpp
flags or the reason llama.cpp has none. The functions follow transformers' ``modeling_rope_utils``
operation for operation, so their float32 results are bit-identical to transformers' own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .registry import (
    RopeConfig,
    RopeFrequencies,
    RopeInputs,
    extended_length,
    register,
    scaled_parameters,
)


def default_inv_freq(dim: int, base: float, device: Any = None) -> Any:
    """Unscaled RoPE: ``inv_freq[i] = base ** (-2i / dim)`` for ``i < dim / 2`` (float32)."""
    import torch

    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
    return 1.0 / (base ** (exponents / dim))


def ntk_base(base: float, factor: float, dim: int) -> float:
    """NTK-aware base: ``base * factor ** (dim / (dim - 2))``.

    With it the highest frequency is unchanged and the lowest is divided by exactly ``factor``.
    """
    return base * factor ** (dim / (dim - 2))


def dynamic_ntk_base(
    base: float, factor: float, dim: int, original_length: int, seq_len: int | None
) -> float:
    """Dynamic-NTK base for ``seq_len`` tokens: NTK-aware with effective scale
    ``factor * L / L0 - (factor - 1)`` where ``L = max(seq_len, L0)`` (1 at or below ``L0``)."""
    length = original_length if seq_len is None else max(seq_len, original_length)
    return base * ((factor * length / original_length) - (factor - 1)) ** (dim / (dim - 2))


def _num(value: float) -> str:
    """A number as llama.cpp flags spell it: integers without ``.0``, others exactly."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def unscaled_llamacpp_flags(
    rope_parameters: Mapping[str, Any], architecture: str | None
) -> list[str]:
    """llama.cpp flags for a plain (``default``) RoPE with the given base."""
    return ["--rope-scaling", "none", "--rope-freq-base", _num(rope_parameters["rope_theta"])]


# --- linear -------------------------------------------------------------------------------


def _linear_llamacpp(rope_parameters: Mapping[str, Any], architecture: str | None) -> list[str]:
    scale = _num(rope_parameters["factor"])
    base = _num(rope_parameters["rope_theta"])
    return ["--rope-scaling", "linear", "--rope-scale", scale, "--rope-freq-base", base]


@register("linear", llamacpp=_linear_llamacpp)
def _linear(inputs: RopeInputs) -> RopeFrequencies:
    """Position interpolation: every frequency is divided by the factor, so positions up to
    ``factor * L0`` map back onto angles seen in training (but neighbours get closer: fine-tune)."""
    inv_freq = default_inv_freq(inputs.dim, inputs.base)
    inv_freq /= inputs.factor
    return RopeFrequencies(inv_freq, 1.0)


# --- NTK-aware ----------------------------------------------------------------------------


def _ntk_config(inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
    base = ntk_base(inputs.base, inputs.factor, inputs.dim)
    return RopeConfig({"rope_type": "default", "rope_theta": base}, extended_length(inputs))


@register("ntk", rope_type="default", export=_ntk_config, llamacpp=unscaled_llamacpp_flags)
def _ntk(inputs: RopeInputs) -> RopeFrequencies:
    """NTK-aware scaling: raise the base to ``base * s ** (d / (d - 2))``; high frequencies (local
    order) barely move, the lowest is interpolated by exactly ``s``: good zero-shot."""
    base = ntk_base(inputs.base, inputs.factor, inputs.dim)
    return RopeFrequencies(default_inv_freq(inputs.dim, base), 1.0)


# --- dynamic NTK --------------------------------------------------------------------------


def _dynamic_base(inputs: RopeInputs) -> float:
    return dynamic_ntk_base(
        inputs.base, inputs.factor, inputs.dim, inputs.original_length, inputs.seq_len
    )


def _dynamic_config(inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
    if inputs.seq_len is not None:  # frozen at seq_len: static NTK with that base
        parameters = {"rope_type": "default", "rope_theta": _dynamic_base(inputs)}
        return RopeConfig(parameters, extended_length(inputs))
    parameters = {"rope_type": "dynamic", "factor": inputs.factor, "rope_theta": inputs.base}
    # transformers' dynamic formula reads the trained length from max_position_embeddings
    return RopeConfig(parameters, inputs.original_length)


_DYNAMIC_LLAMACPP = (
    "llama.cpp has no length-dependent RoPE base; freeze it with scale_rope(model, 'dynamic', "
    "factor, seq_len=N), which exports a fixed rope_theta (--rope-freq-base)"
)


@register("dynamic", length_dependent=True, export=_dynamic_config, llamacpp=_DYNAMIC_LLAMACPP)
def _dynamic(inputs: RopeInputs) -> RopeFrequencies:
    """Dynamic NTK: the NTK base grows with the current length, so sequences within the trained
    context keep the original frequencies exactly and longer ones are stretched just enough."""
    return RopeFrequencies(default_inv_freq(inputs.dim, _dynamic_base(inputs)), 1.0)


# --- YaRN ---------------------------------------------------------------------------------


def _yarn_llamacpp(rope_parameters: Mapping[str, Any], architecture: str | None) -> list[str]:
    if rope_parameters.get("truncate", True) is False:
        raise ConfigError(
            "no llama.cpp equivalent for YaRN with truncate=False (llama.cpp always truncates)"
        )
    factor = float(rope_parameters["factor"])
    original = int(rope_parameters["original_max_position_embeddings"])
    flags = ["--rope-scaling", "yarn", "--rope-scale", _num(factor)]
    flags += ["--rope-freq-base", _num(rope_parameters["rope_theta"])]
    flags += ["--yarn-orig-ctx", str(original)]
    if rope_parameters.get("beta_fast") not in (None, 32):
        flags += ["--yarn-beta-fast", _num(rope_parameters["beta_fast"])]
    if rope_parameters.get("beta_slow") not in (None, 1):
        flags += ["--yarn-beta-slow", _num(rope_parameters["beta_slow"])]
    return flags + _yarn_magnitude_flags(rope_parameters, factor, architecture)


def _yarn_magnitude_flags(rope_parameters: Mapping[str, Any], factor: float,
                          architecture: str | None) -> list[str]:
    """YaRN's attention magnitude, when it is not llama.cpp's own ``0.1 ln s + 1``.

    llama.cpp (since ggml-org/llama.cpp#17945) overwrites ``--yarn-attn-factor`` whenever YaRN
    is on, recomputing ``0.1 ln s + 1`` (measured: the flag changes no logit), and then
    multiplies by the GGUF's ``ARCH.rope.scaling.attn_factor``; so a different magnitude is that
    key, overridden, as a ratio to llama.cpp's own (``0.1 ln s + 1`` for a GGUF without
    ``rope.scaling.yarn_log_multiplier``). The key's name needs the GGUF's architecture.
    """
    magnitude = ("attention_factor", "mscale", "mscale_all_dim")
    attention = _yarn_attention(factor, {k: rope_parameters[k] for k in magnitude
                                         if k in rope_parameters})
    implicit = 0.1 * math.log(factor) + 1.0
    if math.isclose(attention, implicit, rel_tol=1e-12):
        return []
    if architecture is None:
        raise ConfigError(
            f"a YaRN attention factor of {attention:g} (not 0.1 ln s + 1 = {implicit:g}) is "
            "set in llama.cpp through the GGUF key ARCH.rope.scaling.attn_factor (llama.cpp "
            "ignores --yarn-attn-factor with YaRN on): pass architecture=, the GGUF's "
            "general.architecture (e.g. 'llama')"
        )
    key = f"{architecture}.rope.scaling.attn_factor"
    return ["--override-kv", f"{key}=float:{_num(attention / implicit)}"]


def _yarn_attention(factor: float, params: Mapping[str, Any]) -> float:
    """YaRN's attention magnitude: given, or ``0.1 m ln s + 1`` (a ratio of two with mscales)."""

    def get_mscale(scale: float, m: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is not None:
        return float(attention_factor)
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
    return float(get_mscale(factor))


_YARN_PARAMS = (
    "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"
)


@register("yarn", params=_YARN_PARAMS, llamacpp=_yarn_llamacpp)
def _yarn(inputs: RopeInputs) -> RopeFrequencies:
    """YaRN: by frequency band. Dimensions that rotate more than ``beta_fast`` times over the
    trained context keep their frequency, those under ``beta_slow`` rotations are interpolated by
    the factor, a linear ramp blends between; attention logits are sharpened by ``0.1 ln s + 1``."""
    import torch

    p = inputs.params
    dim, base, factor, original = inputs.dim, inputs.base, inputs.factor, inputs.original_length
    beta_fast = p.get("beta_fast") or 32
    beta_slow = p.get("beta_slow") or 1
    if beta_fast <= beta_slow:
        raise ConfigError(f"YaRN needs beta_fast > beta_slow, got {beta_fast} and {beta_slow}")
    if p.get("attention_factor") is not None and p["attention_factor"] <= 0:
        raise ConfigError(f"YaRN attention_factor must be > 0, got {p['attention_factor']}")

    def correction_dim(rotations: float) -> float:
        # the dimension whose wavelength fits `rotations` times into the trained context
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # prevent a division by zero, as transformers does

    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp.to(dtype=torch.float)
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_weight)
        + inv_freq_extrapolation * extrapolation_weight
    )
    return RopeFrequencies(inv_freq, _yarn_attention(factor, p))


# --- Llama 3.1 ----------------------------------------------------------------------------


def _llama3_factors(params: Mapping[str, Any]) -> tuple[float, float]:
    return params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)


def _llama3_config(inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
    low, high = _llama3_factors(inputs.params)
    parameters = scaled_parameters("llama3", inputs)
    parameters.update(low_freq_factor=float(low), high_freq_factor=float(high))
    return RopeConfig(parameters, extended_length(inputs))


_LLAMA3_LLAMACPP = (
    "llama.cpp applies Llama-3 frequency factors from a rope_freqs tensor written into the GGUF "
    "at conversion, not from command-line flags"
)


@register(
    "llama3",
    params=("low_freq_factor", "high_freq_factor"),
    export=_llama3_config,
    llamacpp=_LLAMA3_LLAMACPP,
)
def _llama3(inputs: RopeInputs) -> RopeFrequencies:
    """Llama 3.1: wavelengths shorter than ``L0 / high_freq_factor`` are kept, longer than
    ``L0 / low_freq_factor`` divided by the factor, smooth interpolation in between
    (defaults 1 and 4, as Llama 3.1)."""
    import torch

    low_freq_factor, high_freq_factor = _llama3_factors(inputs.params)
    if not high_freq_factor > low_freq_factor > 0:
        raise ConfigError(
            "llama3 needs high_freq_factor > low_freq_factor > 0, "
            f"got {high_freq_factor} and {low_freq_factor}"
        )
    factor, old_context_len = inputs.factor, inputs.original_length
    inv_freq = default_inv_freq(inputs.dim, inputs.base)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return RopeFrequencies(torch.where(is_medium, smoothed, inv_freq_llama), 1.0)


# --- LongRoPE -----------------------------------------------------------------------------


def _longrope_config(inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
    """Frozen at ``seq_len``, both factor lists become the one chosen for that length."""
    params, seq_len = inputs.params, inputs.seq_len
    frozen = seq_len is not None
    long = seq_len is not None and seq_len > inputs.original_length
    key = "long_factor" if long else "short_factor"
    parameters = scaled_parameters("longrope", inputs)
    parameters.update(
        short_factor=list(params[key] if frozen else params["short_factor"]),
        long_factor=list(params[key] if frozen else params["long_factor"]),
        attention_factor=frequencies.attention_scaling,
    )
    return RopeConfig(parameters, extended_length(inputs))


_LONGROPE_LLAMACPP = (
    "llama.cpp applies LongRoPE short/long factors from tensors written into the GGUF at "
    "conversion, not from command-line flags"
)


@register(
    "longrope",
    params=("short_factor", "long_factor", "attention_factor"),
    length_dependent=True,
    export=_longrope_config,
    llamacpp=_LONGROPE_LLAMACPP,
)
def _longrope(inputs: RopeInputs) -> RopeFrequencies:
    """LongRoPE (Phi-3): one searched rescale factor per frequency, ``short_factor`` up to the
    trained length and ``long_factor`` beyond it; attention scaled by
    ``sqrt(1 + ln s / ln L0)``. The factor lists are model-specific (found by search)."""
    import torch

    half = inputs.dim // 2
    factors = {}
    for key in ("short_factor", "long_factor"):
        values = inputs.params.get(key)
        if values is None:
            raise ConfigError(
                f"longrope needs {key}: a list of {half} per-frequency factors searched for the "
                "model"
            )
        values = list(values)
        if len(values) != half or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise ConfigError(
                f"longrope {key} must be {half} positive numbers (rotary dim / 2), "
                f"got {len(values)}"
            )
        factors[key] = values
    attention_factor = inputs.params.get("attention_factor")
    if attention_factor is None:
        attention_factor = math.sqrt(1 + math.log(inputs.factor) / math.log(inputs.original_length))
    use_long = inputs.seq_len is not None and inputs.seq_len > inputs.original_length
    ext = torch.tensor(factors["long_factor" if use_long else "short_factor"], dtype=torch.float32)
    shape = torch.arange(0, inputs.dim, 2, dtype=torch.int64).float() / inputs.dim
    return RopeFrequencies(1.0 / (ext * inputs.base**shape), float(attention_factor))
