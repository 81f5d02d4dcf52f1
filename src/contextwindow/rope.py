"""RoPE context extension: linear, NTK-aware, dynamic NTK, YaRN, Llama-3 and LongRoPE scaling.

Three layers, from pure maths to a loaded model:

* a **registry of pure functions** (:func:`register`, :func:`get_method`, :func:`compute`), one per
  method, each mapping a :class:`RopeInputs` (rotary dim, base, factor, trained context, current
  length, method parameters) to :class:`RopeFrequencies` (inverse frequencies, attention scaling).
  They follow transformers' ``modeling_rope_utils`` operation for operation, so the float32 results
  are bit-identical to transformers' own for every method it has;
* :func:`scale_rope` applies a method **in place** to a loaded transformers model (its config's
  ``rope_parameters`` and the rotary buffers) and returns the ``rope_parameters`` dict to put in a
  transformers config or give vLLM; ``method="none"`` restores the model as it was loaded.
  :func:`to_llamacpp_flags` turns that dict into llama.cpp command-line flags;
* :func:`rope_length` makes length-dependent methods (dynamic NTK, LongRoPE) compute their
  frequencies for a whole sequence even when it is fed in chunks through a KV cache.

The dynamic-NTK KV-cache trap: transformers recomputes the dynamic base from the largest position
each forward call sees. With a KV cache, keys already cached keep the base they were rotated with, so
a cached prefix and the tokens fed after it are rotated with different bases (and a chunk that ends
before the trained length even resets the base). ``scale_rope(model, "dynamic", f)`` keeps
transformers' behaviour (a full forward is exact); ``scale_rope(model, "dynamic", f, seq_len=N)``
freezes the base at the value for ``N`` tokens, which is cache-safe (it is static NTK with that
base); and :func:`rope_length` reproduces a single full forward when prefilling in chunks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from .errors import ConfigError, ModelError

__all__ = [
    "RopeInputs",
    "RopeFrequencies",
    "RopeMethod",
    "register",
    "get_method",
    "available_methods",
    "compute",
    "default_inv_freq",
    "ntk_base",
    "dynamic_ntk_base",
    "scale_rope",
    "rope_length",
    "to_llamacpp_flags",
    "RESTORE_METHODS",
]

#: Method names that undo any scaling (restore the model as loaded).
RESTORE_METHODS = ("none", "default")


@dataclass(frozen=True)
class RopeInputs:
    """Everything a scaling method needs; immutable.

    ``dim`` is the rotary dimension (``head_dim * partial_rotary_factor``), ``base`` the RoPE base
    (``rope_theta``), ``factor`` the context-extension factor, ``original_length`` the context the
    model was trained with, ``seq_len`` the current sequence length (only dynamic NTK and LongRoPE
    read it; ``None`` means "at load time", i.e. not longer than ``original_length``) and
    ``params`` the method's own parameters (e.g. YaRN's ``beta_fast``).
    """

    dim: int
    base: float
    factor: float = 1.0
    original_length: int = 2048
    seq_len: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 4 or self.dim % 2:
            raise ConfigError(f"rotary dim must be an even integer >= 4, got {self.dim!r}")
        if not (isinstance(self.base, (int, float)) and math.isfinite(self.base) and self.base > 1):
            raise ConfigError(f"RoPE base (rope_theta) must be a finite number > 1, got {self.base!r}")
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor)):
            raise ConfigError(f"factor must be a finite number, got {self.factor!r}")
        if not isinstance(self.original_length, int) or self.original_length < 1:
            raise ConfigError(f"original_length must be a positive integer, got {self.original_length!r}")
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 1):
            raise ConfigError(f"seq_len must be a positive integer or None, got {self.seq_len!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


class RopeFrequencies(NamedTuple):
    """What a method returns: the ``dim // 2`` inverse frequencies and the attention scaling.

    The attention scaling multiplies cos and sin (so both queries and keys), as in transformers.
    """

    inv_freq: Any  # torch.Tensor, float32, shape (dim // 2,)
    attention_scaling: float


@dataclass(frozen=True)
class RopeMethod:
    """A registered method: its function and how it maps to configs."""

    name: str
    fn: Callable[[RopeInputs], RopeFrequencies]
    params: tuple[str, ...]
    rope_type: str  # transformers' rope_type for the exported config
    length_dependent: bool  # frequencies depend on the current sequence length
    summary: str

    def __call__(self, inputs: RopeInputs) -> RopeFrequencies:
        return compute(self.name, inputs)


_REGISTRY: dict[str, RopeMethod] = {}


def register(
    name: str,
    *,
    params: tuple[str, ...] = (),
    rope_type: str | None = None,
    length_dependent: bool = False,
) -> Callable[[Callable[[RopeInputs], RopeFrequencies]], Callable[[RopeInputs], RopeFrequencies]]:
    """Decorator adding a method to the registry under ``name`` (``rope_type`` defaults to it)."""
    if name in RESTORE_METHODS:
        raise ConfigError(f"{name!r} is reserved: it restores the unscaled model")

    def decorator(fn: Callable[[RopeInputs], RopeFrequencies]) -> Callable[[RopeInputs], RopeFrequencies]:
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        _REGISTRY[name] = RopeMethod(
            name=name,
            fn=fn,
            params=tuple(params),
            rope_type=rope_type or name,
            length_dependent=length_dependent,
            summary=" ".join(doc.split()),
        )
        return fn

    return decorator


def available_methods() -> tuple[str, ...]:
    """Names of the registered scaling methods, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> RopeMethod:
    """The registered method ``name``, or ``ConfigError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join((*RESTORE_METHODS[:1], *_REGISTRY))
        raise ConfigError(f"unknown RoPE scaling method {name!r}; known methods: {known}") from None


def _check_factor(method: str, factor: Any) -> float:
    if factor is None:
        raise ConfigError(f"RoPE method {method!r} needs a scaling factor > 1 (e.g. factor=2)")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
        raise ConfigError(f"RoPE scaling factor must be a number > 1, got {factor!r}")
    if factor <= 1:
        raise ConfigError(
            f"RoPE scaling factor must be > 1 (it is new context / trained context), got {factor!r}; "
            "use method='none' for the unscaled model"
        )
    return float(factor)


def compute(method: str, inputs: RopeInputs) -> RopeFrequencies:
    """Run method ``method`` on ``inputs`` after checking its factor and parameter names."""
    spec = get_method(method)
    _check_factor(method, inputs.factor)
    unknown = sorted(set(inputs.params) - set(spec.params))
    if unknown:
        accepted = ", ".join(spec.params) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for RoPE method {method!r}; accepted: {accepted}"
        )
    return spec.fn(inputs)


# --------------------------------------------------------------------------------------------
# The methods. Each mirrors transformers' float32 arithmetic so results are bit-identical.
# --------------------------------------------------------------------------------------------


def default_inv_freq(dim: int, base: float, device: Any = None) -> Any:
    """Unscaled RoPE: ``inv_freq[i] = base ** (-2i / dim)`` for ``i < dim / 2`` (float32)."""
    import torch

    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (base**exponents)


def ntk_base(base: float, factor: float, dim: int) -> float:
    """NTK-aware base: ``base * factor ** (dim / (dim - 2))``.

    With it the highest frequency is unchanged and the lowest is divided by exactly ``factor``.
    """
    return base * factor ** (dim / (dim - 2))


def dynamic_ntk_base(base: float, factor: float, dim: int, original_length: int, seq_len: int | None) -> float:
    """Dynamic-NTK base for ``seq_len`` tokens: NTK-aware with effective scale
    ``factor * L / L0 - (factor - 1)`` where ``L = max(seq_len, L0)`` (1 at or below ``L0``)."""
    length = original_length if seq_len is None else max(seq_len, original_length)
    return base * ((factor * length / original_length) - (factor - 1)) ** (dim / (dim - 2))


@register("linear")
def _linear(inputs: RopeInputs) -> RopeFrequencies:
    """Position interpolation: every frequency is divided by the factor, so positions up to
    ``factor * L0`` map back onto angles seen in training (but neighbours get closer: fine-tune)."""
    inv_freq = default_inv_freq(inputs.dim, inputs.base)
    inv_freq /= inputs.factor
    return RopeFrequencies(inv_freq, 1.0)


@register("ntk", rope_type="default")
def _ntk(inputs: RopeInputs) -> RopeFrequencies:
    """NTK-aware scaling: raise the base to ``base * s ** (d / (d - 2))``; high frequencies (local
    order) barely move, the lowest is interpolated by exactly ``s``: good zero-shot."""
    base = ntk_base(inputs.base, inputs.factor, inputs.dim)
    return RopeFrequencies(default_inv_freq(inputs.dim, base), 1.0)


@register("dynamic", length_dependent=True)
def _dynamic(inputs: RopeInputs) -> RopeFrequencies:
    """Dynamic NTK: the NTK base grows with the current length, so sequences within the trained
    context keep the original frequencies exactly and longer ones are stretched just enough."""
    base = dynamic_ntk_base(inputs.base, inputs.factor, inputs.dim, inputs.original_length, inputs.seq_len)
    return RopeFrequencies(default_inv_freq(inputs.dim, base), 1.0)


_YARN_PARAMS = ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate")


@register("yarn", params=_YARN_PARAMS)
def _yarn(inputs: RopeInputs) -> RopeFrequencies:
    """YaRN: by frequency band. Dimensions that rotate more than ``beta_fast`` times over the trained
    context keep their frequency, those under ``beta_slow`` rotations are interpolated by the
    factor, a linear ramp blends between; attention logits are sharpened by ``0.1 ln s + 1``."""
    import torch

    p = inputs.params
    dim, base, factor, original = inputs.dim, inputs.base, inputs.factor, inputs.original_length
    attention_factor = p.get("attention_factor")
    mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
    beta_fast = p.get("beta_fast") or 32
    beta_slow = p.get("beta_slow") or 1
    if beta_fast <= beta_slow:
        raise ConfigError(f"YaRN needs beta_fast > beta_slow, got {beta_fast} and {beta_slow}")
    if attention_factor is not None and attention_factor <= 0:
        raise ConfigError(f"YaRN attention_factor must be > 0, got {attention_factor}")
    truncate = p.get("truncate", True)

    def get_mscale(scale: float, m: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)

    def correction_dim(rotations: float) -> float:
        # the dimension whose wavelength fits `rotations` times into the trained context
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
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
    return RopeFrequencies(inv_freq, float(attention_factor))


@register("llama3", params=("low_freq_factor", "high_freq_factor"))
def _llama3(inputs: RopeInputs) -> RopeFrequencies:
    """Llama 3.1: wavelengths shorter than ``L0 / high_freq_factor`` are kept, longer than
    ``L0 / low_freq_factor`` divided by the factor, smooth interpolation in between
    (defaults 1 and 4, as Llama 3.1)."""
    import torch

    low_freq_factor = inputs.params.get("low_freq_factor", 1.0)
    high_freq_factor = inputs.params.get("high_freq_factor", 4.0)
    if not high_freq_factor > low_freq_factor > 0:
        raise ConfigError(
            f"llama3 needs high_freq_factor > low_freq_factor > 0, got {high_freq_factor} and {low_freq_factor}"
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


@register("longrope", params=("short_factor", "long_factor", "attention_factor"), length_dependent=True)
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
                f"longrope needs {key}: a list of {half} per-frequency factors searched for the model"
            )
        values = list(values)
        if len(values) != half or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise ConfigError(f"longrope {key} must be {half} positive numbers (rotary dim / 2), got {len(values)}")
        factors[key] = values
    attention_factor = inputs.params.get("attention_factor")
    if attention_factor is None:
        attention_factor = math.sqrt(1 + math.log(inputs.factor) / math.log(inputs.original_length))
    use_long = inputs.seq_len is not None and inputs.seq_len > inputs.original_length
    ext = torch.tensor(factors["long_factor" if use_long else "short_factor"], dtype=torch.float32)
    shape = torch.arange(0, inputs.dim, 2, dtype=torch.int64).float() / inputs.dim
    return RopeFrequencies(1.0 / (ext * inputs.base**shape), float(attention_factor))


# --------------------------------------------------------------------------------------------
# Applying a method to a loaded transformers model.
# --------------------------------------------------------------------------------------------

_ORIGINAL_ATTR = "_contextwindow_rope_original"
_APPLIED_ATTR = "_contextwindow_rope_applied"


@dataclass
class _ModuleState:
    inv_freq: Any
    original_inv_freq: Any
    attention_scaling: float
    rope_type: Any
    max_seq_len_cached: Any
    original_max_seq_len: Any
    long_inv_freq: Any


@dataclass
class _Original:
    rope_parameters: dict[str, Any]
    max_position_embeddings: int
    modules: list[_ModuleState]


def _rotary_modules(model: Any) -> list[Any]:
    from .models import rotary_embedding

    rotary_embedding(model)  # raises ModelError when there is none
    return [m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type")]


def _clone(t: Any) -> Any:
    """A normal (not inference-mode) copy, so saved state stays usable outside ``inference_mode``."""
    import torch

    if t is None:
        return None
    with torch.inference_mode(False):
        return t.detach().clone()


def _snapshot(module: Any) -> _ModuleState:
    clone = _clone

    return _ModuleState(
        inv_freq=clone(module.inv_freq),
        original_inv_freq=clone(getattr(module, "original_inv_freq", None)),
        attention_scaling=module.attention_scaling,
        rope_type=copy.deepcopy(module.rope_type),
        max_seq_len_cached=getattr(module, "max_seq_len_cached", None),
        original_max_seq_len=getattr(module, "original_max_seq_len", None),
        long_inv_freq=clone(getattr(module, "long_inv_freq", None)),
    )


def _set_buffer(module: Any, name: str, value: Any) -> None:
    current = getattr(module, name, None)
    if current is not None:
        value = value.to(device=current.device, dtype=current.dtype)
    module.register_buffer(name, _clone(value), persistent=False)


def _restore(module: Any, state: _ModuleState) -> None:
    _set_buffer(module, "inv_freq", state.inv_freq)
    if state.original_inv_freq is not None:
        _set_buffer(module, "original_inv_freq", state.original_inv_freq)
    module.attention_scaling = state.attention_scaling
    module.rope_type = copy.deepcopy(state.rope_type)
    if state.max_seq_len_cached is not None:
        module.max_seq_len_cached = state.max_seq_len_cached
    if state.original_max_seq_len is not None:
        module.original_max_seq_len = state.original_max_seq_len
    if state.long_inv_freq is not None:
        module.long_inv_freq = _clone(state.long_inv_freq).to(module.inv_freq.device)
    elif "long_inv_freq" in module.__dict__:
        del module.__dict__["long_inv_freq"]


def _original(model: Any, modules: list[Any]) -> _Original:
    saved = getattr(model, _ORIGINAL_ATTR, None)
    if saved is not None:
        return saved
    config = model.config
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, Mapping) or "rope_theta" not in params:
        raise ModelError(
            f"{type(model).__name__} has no flat rope_parameters with a rope_theta in its config "
            "(per-layer RoPE configs are not supported)"
        )
    if any(isinstance(v, Mapping) for v in params.values()) or any(
        not isinstance(m.rope_type, str) for m in modules
    ):
        raise ModelError("per-layer RoPE configurations are not supported by scale_rope")
    saved = _Original(
        rope_parameters=copy.deepcopy(dict(params)),
        max_position_embeddings=int(config.max_position_embeddings),
        modules=[_snapshot(m) for m in modules],
    )
    # a plain attribute (not a buffer): nn.Module stores it in __dict__
    object.__setattr__(model, _ORIGINAL_ATTR, saved)
    return saved


def _rotary_dim(model: Any, saved: _Original) -> int:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * saved.rope_parameters.get("partial_rotary_factor", 1.0))
    half = int(saved.modules[0].inv_freq.numel())
    if dim != 2 * half:
        raise ModelError(f"rotary dim {dim} from the config does not match the model's {half} frequencies")
    return dim


def scale_rope(
    model: Any,
    method: str = "none",
    factor: float | None = None,
    *,
    original_length: int | None = None,
    seq_len: int | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Apply RoPE scaling ``method`` with ``factor`` to a loaded transformers model, in place.

    Updates ``model.config.rope_parameters`` (and ``max_position_embeddings``: the extended length,
    except for dynamic NTK whose formula reads the trained length from it) and every rotary module's
    ``inv_freq`` / ``original_inv_freq`` / ``attention_scaling`` / ``rope_type``, exactly as if
    transformers had built the model from the returned config. ``method="none"`` (or ``"default"``)
    restores the model as it was first seen. The base (``rope_theta``) and trained length are always
    those of the model as loaded; ``original_length`` overrides the latter.

    Length-dependent methods (``dynamic``, ``longrope``) follow the sequence length per forward
    call, delegated to transformers (``rope_type`` set accordingly). Give ``seq_len=N`` to freeze
    them at the frequencies for ``N`` tokens instead: a KV cache then stays consistent. A frozen
    dynamic NTK is exported as ``{"rope_type": "default", "rope_theta": <base for N>}``, a frozen
    LongRoPE with both factor lists set to the chosen one.

    Returns the ``rope_parameters`` dict (transformers config / vLLM rope scaling).
    """
    modules = _rotary_modules(model)
    saved = _original(model, modules)
    config = model.config

    if method in RESTORE_METHODS:
        if params:
            raise ConfigError(f"method {method!r} takes no parameters, got {', '.join(sorted(params))}")
        config.rope_parameters = copy.deepcopy(saved.rope_parameters)
        config.max_position_embeddings = saved.max_position_embeddings
        for module, state in zip(modules, saved.modules):
            _restore(module, state)
            if getattr(module, "config", config) is not config:
                module.config.rope_parameters = copy.deepcopy(saved.rope_parameters)
                module.config.max_position_embeddings = saved.max_position_embeddings
        object.__setattr__(model, _APPLIED_ATTR, None)
        return copy.deepcopy(saved.rope_parameters)

    spec = get_method(method)
    factor = _check_factor(method, factor)
    base = float(saved.rope_parameters["rope_theta"])
    trained = original_length or saved.rope_parameters.get("original_max_position_embeddings")
    trained = int(trained or saved.max_position_embeddings)
    dim = _rotary_dim(model, saved)
    frozen = spec.length_dependent and seq_len is not None
    inputs = RopeInputs(dim, base, factor, trained, seq_len if frozen else None, params)
    inv_freq, attention_scaling = compute(method, inputs)

    extra = {k: v for k, v in saved.rope_parameters.items() if k == "partial_rotary_factor"}
    if method == "ntk":
        rope_parameters = {"rope_type": "default", "rope_theta": ntk_base(base, factor, dim)}
    elif method == "dynamic" and frozen:
        base_n = dynamic_ntk_base(base, factor, dim, trained, seq_len)
        rope_parameters = {"rope_type": "default", "rope_theta": base_n}
    elif method == "dynamic":
        rope_parameters = {"rope_type": "dynamic", "factor": factor, "rope_theta": base}
    else:
        rope_parameters = {
            "rope_type": spec.rope_type,
            "factor": factor,
            "original_max_position_embeddings": trained,
            "rope_theta": base,
        }
        if method == "llama3":
            rope_parameters["low_freq_factor"] = float(params.get("low_freq_factor", 1.0))
            rope_parameters["high_freq_factor"] = float(params.get("high_freq_factor", 4.0))
        elif method == "longrope":
            key = "long_factor" if frozen and seq_len > trained else "short_factor"
            short = list(params[key] if frozen else params["short_factor"])
            long = list(params[key] if frozen else params["long_factor"])
            rope_parameters.update(short_factor=short, long_factor=long, attention_factor=attention_scaling)
        else:
            rope_parameters.update({k: v for k, v in params.items() if v is not None})
    rope_parameters.update(extra)

    if method == "dynamic" and not frozen:
        max_positions = trained  # transformers' dynamic formula reads L0 from max_position_embeddings
    elif frozen:
        max_positions = max(int(seq_len), trained)
    else:
        max_positions = int(round(trained * factor))
    configs = {id(config): config}
    configs.update({id(m.config): m.config for m in modules if getattr(m, "config", None) is not None})
    for cfg in configs.values():
        cfg.rope_parameters = copy.deepcopy(rope_parameters)
        cfg.max_position_embeddings = max_positions

    module_rope_type = "default" if (method == "ntk" or frozen) else spec.rope_type
    for module in modules:
        _set_buffer(module, "inv_freq", inv_freq)
        _set_buffer(module, "original_inv_freq", inv_freq)
        module.attention_scaling = attention_scaling
        module.rope_type = module_rope_type
        module.max_seq_len_cached = max_positions
        module.original_max_seq_len = max_positions
        if "long_inv_freq" in module.__dict__:
            del module.__dict__["long_inv_freq"]
    object.__setattr__(
        model, _APPLIED_ATTR, {"method": method, "factor": factor, "seq_len": seq_len, "params": dict(params)}
    )
    return copy.deepcopy(rope_parameters)


def applied_scaling(model: Any) -> dict[str, Any] | None:
    """What :func:`scale_rope` last applied to ``model`` (``None`` if unscaled or restored)."""
    value = getattr(model, _APPLIED_ATTR, None)
    return copy.deepcopy(value)


def _trigger(module: Any, seq_len: int) -> None:
    """Let transformers update a length-dependent rotary module for a forward of ``seq_len``."""
    import torch

    position_ids = torch.tensor([[seq_len - 1]], device=module.inv_freq.device)
    x = torch.zeros(1, device=module.inv_freq.device, dtype=torch.float32)
    module(x, position_ids)


@contextmanager
def rope_length(model: Any, seq_len: int) -> Iterator[None]:
    """Within the block, every forward uses the RoPE frequencies that one forward of ``seq_len``
    tokens would use on a freshly scaled model, however the sequence is chunked through a KV cache.

    Only length-dependent rotary modules (transformers' ``dynamic`` and ``longrope`` types) are
    affected; others are untouched. On exit each such module is left exactly as transformers leaves
    it after a single forward of ``seq_len`` tokens, so cached decoding that follows behaves like
    ``model.generate`` on the whole prompt (for dynamic NTK: the base keeps growing per new token,
    older keys keep the base they were cached with).
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    modules = [
        m
        for m in _rotary_modules(model)
        if isinstance(m.rope_type, str) and ("dynamic" in m.rope_type or m.rope_type == "longrope")
    ]
    after: list[tuple[Any, _ModuleState]] = []
    for module in modules:
        if "dynamic" in module.rope_type:
            # start from the fresh state: transformers' dynamic update only ever grows the base
            module.max_seq_len_cached = module.original_max_seq_len
            _set_buffer(module, "inv_freq", module.original_inv_freq)
        _trigger(module, seq_len)
        state = _snapshot(module)
        after.append((module, state))
        module.rope_type = "default"  # frozen: transformers skips its per-forward update
    try:
        yield
    finally:
        for module, state in after:
            _restore(module, state)


# --------------------------------------------------------------------------------------------
# llama.cpp
# --------------------------------------------------------------------------------------------

#: Methods llama.cpp cannot express with command-line flags, and why.
LLAMACPP_UNSUPPORTED = {
    "dynamic": (
        "llama.cpp has no length-dependent RoPE base; freeze it with scale_rope(model, 'dynamic', "
        "factor, seq_len=N), which exports a fixed rope_theta (--rope-freq-base)"
    ),
    "llama3": (
        "llama.cpp applies Llama-3 frequency factors from a rope_freqs tensor written into the GGUF "
        "at conversion, not from command-line flags"
    ),
    "longrope": (
        "llama.cpp applies LongRoPE short/long factors from tensors written into the GGUF at "
        "conversion, not from command-line flags"
    ),
}


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def to_llamacpp_flags(rope_parameters: Mapping[str, Any], *, ctx_size: int | None = None) -> list[str]:
    """llama.cpp (``llama-cli`` / ``llama-server``) flags equivalent to a ``rope_parameters`` dict
    as returned by :func:`scale_rope`.

    default / NTK-aware: ``--rope-scaling none --rope-freq-base B``; linear: ``--rope-scaling linear
    --rope-scale s``; YaRN: ``--rope-scaling yarn --rope-scale s --yarn-orig-ctx L0`` (plus beta and
    attention-factor flags when not the defaults). Dynamic NTK, Llama-3 and LongRoPE have no flag
    equivalent: ``ConfigError`` says why. ``ctx_size`` adds ``--ctx-size``.
    """
    rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
    if "rope_theta" not in rope_parameters:
        raise ConfigError("rope_parameters needs a rope_theta to build llama.cpp flags")
    base = ["--rope-freq-base", _num(rope_parameters["rope_theta"])]
    if rope_type in LLAMACPP_UNSUPPORTED:
        raise ConfigError(f"no llama.cpp equivalent for {rope_type!r}: {LLAMACPP_UNSUPPORTED[rope_type]}")
    if rope_type == "default":
        flags = ["--rope-scaling", "none", *base]
    elif rope_type == "linear":
        flags = ["--rope-scaling", "linear", "--rope-scale", _num(rope_parameters["factor"]), *base]
    elif rope_type == "yarn":
        factor = float(rope_parameters["factor"])
        if rope_parameters.get("truncate", True) is False:
            raise ConfigError("no llama.cpp equivalent for YaRN with truncate=False (llama.cpp always truncates)")
        flags = ["--rope-scaling", "yarn", "--rope-scale", _num(factor), *base]
        flags += ["--yarn-orig-ctx", str(int(rope_parameters["original_max_position_embeddings"]))]
        if rope_parameters.get("beta_fast") not in (None, 32):
            flags += ["--yarn-beta-fast", _num(rope_parameters["beta_fast"])]
        if rope_parameters.get("beta_slow") not in (None, 1):
            flags += ["--yarn-beta-slow", _num(rope_parameters["beta_slow"])]
        # llama.cpp multiplies its attention factor by 0.1 ln s + 1 itself
        inputs = RopeInputs(
            dim=64,
            base=float(rope_parameters["rope_theta"]),
            factor=factor,
            original_length=int(rope_parameters["original_max_position_embeddings"]),
            params={k: rope_parameters[k] for k in ("attention_factor", "mscale", "mscale_all_dim") if k in rope_parameters},
        )
        attention = compute("yarn", inputs).attention_scaling
        implicit = 0.1 * math.log(factor) + 1.0
        if not math.isclose(attention, implicit, rel_tol=1e-12):
            flags += ["--yarn-attn-factor", _num(attention / implicit)]
    else:
        raise ConfigError(f"no llama.cpp equivalent for rope_type {rope_type!r}")
    if ctx_size is not None:
        flags += ["--ctx-size", str(int(ctx_size))]
    return flags
