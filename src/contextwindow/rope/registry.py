"""The RoPE method registry: one :class:`RopeMethod` per name, carrying everything about it.

A method is its pure frequency function plus how it leaves the library: the transformers / vLLM
``rope_parameters`` it exports and its llama.cpp flags (or why there are none). Applying and
exporting only ever ask the registry, so adding a method is one :func:`register` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import ConfigError

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
        base = self.base
        if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 1):
            raise ConfigError(f"RoPE base (rope_theta) must be a finite number > 1, got {base!r}")
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor)):
            raise ConfigError(f"factor must be a finite number, got {self.factor!r}")
        if not isinstance(self.original_length, int) or self.original_length < 1:
            raise ConfigError(
                f"original_length must be a positive integer, got {self.original_length!r}"
            )
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 1):
            raise ConfigError(f"seq_len must be a positive integer or None, got {self.seq_len!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


class RopeFrequencies(NamedTuple):
    """What a method returns: the ``dim // 2`` inverse frequencies and the attention scaling.

    The attention scaling multiplies cos and sin (so both queries and keys), as in transformers.
    """

    inv_freq: Any  # torch.Tensor, float32, shape (dim // 2,)
    attention_scaling: float


class RopeConfig(NamedTuple):
    """What a method exports: the config's ``rope_parameters`` and ``max_position_embeddings``."""

    rope_parameters: dict[str, Any]
    max_position_embeddings: int


def extended_length(inputs: RopeInputs) -> int:
    """The context a scaled model is configured for: ``seq_len`` when frozen there, else
    ``factor * original_length``."""
    if inputs.seq_len is not None:
        return max(inputs.seq_len, inputs.original_length)
    return round(inputs.original_length * inputs.factor)


Frequencies = Callable[[RopeInputs], RopeFrequencies]
ConfigBuilder = Callable[[RopeInputs, RopeFrequencies], RopeConfig]
#: ``(rope_parameters, architecture)`` -> flags; ``architecture`` is the GGUF's
#: ``general.architecture`` (the prefix of its metadata keys) when the caller knows it.
FlagBuilder = Callable[[Mapping[str, Any], str | None], list[str]]


@dataclass(frozen=True)
class RopeMethod:
    """A registered method: its frequency function and how it exports itself.

    ``rope_type`` is transformers' name for the exported config; ``export`` builds that config
    (``None``: ``rope_type``, ``factor``, ``original_max_position_embeddings``, ``rope_theta`` and
    the given parameters); ``llamacpp`` turns an exported ``rope_parameters`` dict of this
    ``rope_type`` into llama.cpp flags, or is the reason llama.cpp cannot express it.
    """

    name: str
    fn: Frequencies
    params: tuple[str, ...]
    rope_type: str
    length_dependent: bool  # frequencies depend on the current sequence length
    export: ConfigBuilder | None
    llamacpp: FlagBuilder | str

    def config(self, inputs: RopeInputs, frequencies: RopeFrequencies) -> RopeConfig:
        """The config a transformers model (or vLLM) needs to compute ``frequencies`` itself."""
        if self.export is not None:
            return self.export(inputs, frequencies)
        given = {k: v for k, v in inputs.params.items() if v is not None}
        return RopeConfig({**scaled_parameters(self.rope_type, inputs), **given},
                          extended_length(inputs))


def scaled_parameters(rope_type: str, inputs: RopeInputs) -> dict[str, Any]:
    """The ``rope_parameters`` every factor-based transformers rope type starts with."""
    return {
        "rope_type": rope_type,
        "factor": inputs.factor,
        "original_max_position_embeddings": inputs.original_length,
        "rope_theta": inputs.base,
    }


_REGISTRY: dict[str, RopeMethod] = {}


def register(
    name: str,
    *,
    params: tuple[str, ...] = (),
    rope_type: str | None = None,
    length_dependent: bool = False,
    export: ConfigBuilder | None = None,
    llamacpp: FlagBuilder | str | None = None,
) -> Callable[[Frequencies], Frequencies]:
    """Decorator adding a method to the registry under ``name`` (``rope_type`` defaults to it)."""
    if name in RESTORE_METHODS:
        raise ConfigError(f"{name!r} is reserved: it restores the unscaled model")

    def decorator(fn: Frequencies) -> Frequencies:
        _REGISTRY[name] = RopeMethod(
            name=name,
            fn=fn,
            params=tuple(params),
            rope_type=rope_type or name,
            length_dependent=length_dependent,
            export=export,
            llamacpp=llamacpp or f"no llama.cpp flags are registered for RoPE method {name!r}",
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
        from .extension import available_extensions  # the attention-side methods' registry

        known = ", ".join((*RESTORE_METHODS[:1], *_REGISTRY, *available_extensions()))
        raise ConfigError(
            f"unknown RoPE scaling method {name!r}; known methods: {known}"
        ) from None


def method_for_rope_type(rope_type: str) -> RopeMethod | None:
    """The first registered method exporting transformers' ``rope_type`` (``None`` if none)."""
    return next((m for m in _REGISTRY.values() if m.rope_type == rope_type), None)


def length_dependent_rope_types() -> frozenset[str]:
    """transformers rope types whose frequencies follow the sequence length per forward call."""
    return frozenset(m.rope_type for m in _REGISTRY.values() if m.length_dependent)


def check_factor(method: str, factor: Any) -> float:
    """``factor`` as a float, or ``ConfigError``: scaling needs a finite factor > 1."""
    if factor is None:
        raise ConfigError(f"RoPE method {method!r} needs a scaling factor > 1 (e.g. factor=2)")
    number = isinstance(factor, (int, float)) and not isinstance(factor, bool)
    if not number or not math.isfinite(factor):
        raise ConfigError(f"RoPE scaling factor must be a number > 1, got {factor!r}")
    if factor <= 1:
        raise ConfigError(
            f"RoPE scaling factor must be > 1 (it is new context / trained context), "
            f"got {factor!r}; use method='none' for the unscaled model"
        )
    return float(factor)


def compute(method: str, inputs: RopeInputs) -> RopeFrequencies:
    """Run method ``method`` on ``inputs`` after checking its factor and parameter names."""
    spec = get_method(method)
    check_factor(method, inputs.factor)
    unknown = sorted(set(inputs.params) - set(spec.params))
    if unknown:
        accepted = ", ".join(spec.params) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for RoPE method {method!r}; "
            f"accepted: {accepted}"
        )
    return spec.fn(inputs)
