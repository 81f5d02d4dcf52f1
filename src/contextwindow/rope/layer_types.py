"""RoPE scaling for models with one RoPE per layer type (Gemma-3): the global layers only.

Gemma-3's config holds ``rope_parameters = {"sliding_attention": {...}, "full_attention": {...}}``
and its rotary module one set of buffers per type (``full_attention_inv_freq``, ...). transformers
applies a checkpoint's RoPE scaling to the ``full_attention`` entry only -- local layers never see
a distance beyond their sliding window -- so this does the same: the global layers get exactly the
frequencies transformers would build from the returned parameters, the local layers are left
alone. Length-dependent methods (dynamic NTK, LongRoPE) must be frozen with ``seq_len``: their
per-forward update is not reproduced per layer type.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ModelError
from .registry import RESTORE_METHODS, RopeInputs, check_factor, compute, get_method

GLOBAL = "full_attention"
_SAVED_ATTR = "_contextwindow_rope_layer_types"


@dataclass(frozen=True)
class _Saved:
    """The global layers' RoPE as first seen: what ``method="none"`` restores."""

    rope_parameters: dict[str, Any]
    max_position_embeddings: int
    inv_freq: Any
    attention_scaling: float
    rope_type: str


def has_layer_type_rope(model: Any) -> bool:
    """True when the config keeps one ``rope_parameters`` entry per layer type."""
    params = getattr(model.config, "rope_parameters", None)
    return isinstance(params, dict) and bool(params) and all(
        isinstance(v, dict) for v in params.values()
    )


def _set_global(rotary: Any, inv_freq: Any, attention_scaling: float, rope_type: str) -> None:
    current = getattr(rotary, f"{GLOBAL}_inv_freq")
    inv_freq = inv_freq.detach().clone().to(device=current.device, dtype=current.dtype)
    rotary.register_buffer(f"{GLOBAL}_inv_freq", inv_freq, persistent=False)
    rotary.register_buffer(f"{GLOBAL}_original_inv_freq", inv_freq.clone(), persistent=False)
    setattr(rotary, f"{GLOBAL}_attention_scaling", attention_scaling)
    rotary.rope_type[GLOBAL] = rope_type


def _saved(model: Any, rotary: Any) -> _Saved:
    saved = getattr(model, _SAVED_ATTR, None)
    if saved is None:
        saved = _Saved(
            rope_parameters=copy.deepcopy(dict(model.config.rope_parameters[GLOBAL])),
            max_position_embeddings=int(model.config.max_position_embeddings),
            inv_freq=getattr(rotary, f"{GLOBAL}_inv_freq").detach().clone(),
            attention_scaling=getattr(rotary, f"{GLOBAL}_attention_scaling"),
            rope_type=rotary.rope_type[GLOBAL],
        )
        object.__setattr__(model, _SAVED_ATTR, saved)
    return saved


def scale_global_rope(
    model: Any,
    method: str,
    factor: float | None = None,
    *,
    original_length: int | None = None,
    seq_len: int | None = None,
    **params: Any,
) -> dict[str, Any]:
    """:func:`~contextwindow.rope.scale_rope` for a per-layer-type model; returns the global
    layers' new ``rope_parameters`` (also written to ``config.rope_parameters["full_attention"]``).
    """
    from ..models.rotary import rotary_embedding

    rotary = rotary_embedding(model)
    if GLOBAL not in model.config.rope_parameters or not hasattr(rotary, f"{GLOBAL}_inv_freq"):
        raise ModelError(f"{type(model).__name__} has per-layer-type RoPE but no {GLOBAL} layers")
    saved = _saved(model, rotary)
    config = model.config
    if method in RESTORE_METHODS:
        config.rope_parameters[GLOBAL] = copy.deepcopy(saved.rope_parameters)
        config.max_position_embeddings = saved.max_position_embeddings
        _set_global(rotary, saved.inv_freq, saved.attention_scaling, saved.rope_type)
        return copy.deepcopy(saved.rope_parameters)
    spec = get_method(method)
    if spec.length_dependent and seq_len is None:
        raise ConfigError(
            f"{method!r} recomputes its frequencies per forward, which is not reproduced per layer "
            "type: give seq_len to freeze it at one length"
        )
    factor = check_factor(method, factor)
    trained = original_length or saved.rope_parameters.get("original_max_position_embeddings")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inputs = RopeInputs(int(head_dim), float(saved.rope_parameters["rope_theta"]), factor,
                        int(trained or saved.max_position_embeddings),
                        seq_len if spec.length_dependent else None, params)
    frequencies = compute(method, inputs)
    rope_parameters, max_positions = spec.config(inputs, frequencies)
    config.rope_parameters[GLOBAL] = copy.deepcopy(rope_parameters)
    config.max_position_embeddings = max_positions
    frozen = "default" if spec.length_dependent else rope_parameters["rope_type"]
    _set_global(rotary, frequencies.inv_freq, frequencies.attention_scaling, frozen)
    return copy.deepcopy(rope_parameters)
