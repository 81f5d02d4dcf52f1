"""Applying a registered method to a loaded transformers model, and undoing it.

:func:`scale_rope` rewrites the config's ``rope_parameters`` and the rotary buffers in place,
exactly as transformers would have built them from the exported config, after snapshotting the
model as first seen so ``method="none"`` can restore it. :func:`rope_length` makes
length-dependent methods (dynamic NTK, LongRoPE) compute their frequencies for a whole sequence
even when it is fed in chunks through a KV cache.

The dynamic-NTK KV-cache trap: transformers recomputes the dynamic base from the largest position
each forward call sees. With a KV cache, keys already cached keep the base they were rotated
with, so a cached prefix and the tokens fed after it are rotated with different bases (and a
chunk that ends before the trained length even resets the base). ``scale_rope(model, "dynamic",
f)`` keeps transformers' behaviour (a full forward is exact); ``scale_rope(model, "dynamic", f,
seq_len=N)`` freezes the base at the value for ``N`` tokens, which is cache-safe (it is static NTK
with that base); and :func:`rope_length` reproduces a single full forward when prefilling in
chunks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ModelError
from .extension import get_extension, plan_extension
from .layer_types import has_layer_type_rope, scale_global_rope
from .registry import (
    RESTORE_METHODS,
    RopeFrequencies,
    RopeInputs,
    check_factor,
    compute,
    get_method,
    length_dependent_rope_types,
)

_ORIGINAL_ATTR = "_contextwindow_rope_original"
_APPLIED_ATTR = "_contextwindow_rope_applied"


@dataclass
class _ModuleState:
    """A rotary module's scaling state, as transformers built it or as a forward left it."""

    inv_freq: Any
    original_inv_freq: Any
    attention_scaling: float
    rope_type: Any
    max_seq_len_cached: Any
    original_max_seq_len: Any
    long_inv_freq: Any


@dataclass
class _Original:
    """The model as :func:`scale_rope` first saw it: what ``method="none"`` restores."""

    rope_parameters: dict[str, Any]
    max_position_embeddings: int
    modules: list[_ModuleState]


def _rotary_modules(model: Any) -> list[Any]:
    from ..models.rotary import rotary_embedding

    rotary_embedding(model)  # raises ModelError when there is none
    return [m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "rope_type")]


def _clone(t: Any) -> Any:
    """A normal (not inference-mode) copy: saved state stays usable outside ``inference_mode``."""
    import torch

    if t is None:
        return None
    with torch.inference_mode(False):
        return t.detach().clone()


def _snapshot(module: Any) -> _ModuleState:
    return _ModuleState(
        inv_freq=_clone(module.inv_freq),
        original_inv_freq=_clone(getattr(module, "original_inv_freq", None)),
        attention_scaling=module.attention_scaling,
        rope_type=copy.deepcopy(module.rope_type),
        max_seq_len_cached=getattr(module, "max_seq_len_cached", None),
        original_max_seq_len=getattr(module, "original_max_seq_len", None),
        long_inv_freq=_clone(getattr(module, "long_inv_freq", None)),
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
        raise ModelError(
            f"rotary dim {dim} from the config does not match the model's {half} frequencies"
        )
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

    Updates ``model.config.rope_parameters`` (and ``max_position_embeddings``: the extended
    length, except for dynamic NTK whose formula reads the trained length from it) and every
    rotary module's ``inv_freq`` / ``original_inv_freq`` / ``attention_scaling`` / ``rope_type``,
    exactly as if transformers had built the model from the returned config. ``method="none"``
    (or ``"default"``) restores the model as it was first seen. The base (``rope_theta``) and
    trained length are always those of the model as loaded; ``original_length`` overrides the
    latter.

    Length-dependent methods (``dynamic``, ``longrope``) follow the sequence length per forward
    call, delegated to transformers (``rope_type`` set accordingly). Give ``seq_len=N`` to freeze
    them at the frequencies for ``N`` tokens instead: a KV cache then stays consistent. A frozen
    dynamic NTK is exported as ``{"rope_type": "default", "rope_theta": <base for N>}``, a frozen
    LongRoPE with both factor lists set to the chosen one.

    Models with one RoPE per layer type (Gemma-3) get what transformers scales there: the global
    (``full_attention``) layers only, see :mod:`.layer_types`.

    Attention-side methods (``self-extend``, ``dca``: :mod:`.extension_methods`) keep the
    frequencies as loaded and switch the model to the extended attention function; their
    parameters are chosen for ``factor`` times the trained length unless given, and the returned
    dict describes them (no other engine can run it: ``to_llamacpp_flags`` says why).

    Returns the ``rope_parameters`` dict (transformers config / vLLM rope scaling).
    """
    if get_extension(method) is not None:
        return _extend(model, method, factor, original_length, seq_len, params)
    if has_layer_type_rope(model):
        result = scale_global_rope(model, method, factor, original_length=original_length,
                                   seq_len=seq_len, **params)
        _record(model, method, factor, seq_len, params)
        return result
    modules = _rotary_modules(model)
    saved = _original(model, modules)
    if method in RESTORE_METHODS:
        return _unscale(model, modules, saved, method, params)

    spec = get_method(method)
    factor = check_factor(method, factor)
    trained = _trained(saved, original_length)
    frozen = spec.length_dependent and seq_len is not None
    base = float(saved.rope_parameters["rope_theta"])
    dim = _rotary_dim(model, saved)
    inputs = RopeInputs(dim, base, factor, trained, seq_len if frozen else None, params)
    frequencies = compute(method, inputs)
    rope_parameters, max_positions = spec.config(inputs, frequencies)
    if "partial_rotary_factor" in saved.rope_parameters:
        rope_parameters["partial_rotary_factor"] = saved.rope_parameters["partial_rotary_factor"]

    _plain_attention(model)
    _set_configs(model, modules, rope_parameters, max_positions)
    # frozen: transformers must not recompute the frequencies per forward
    _set_modules(modules, frequencies, "default" if frozen else rope_parameters["rope_type"],
                 max_positions)
    _record(model, method, factor, seq_len, params)
    return copy.deepcopy(rope_parameters)


def _unscale(model: Any, modules: list[Any], saved: _Original, method: str,
              params: dict[str, Any]) -> dict[str, Any]:
    """``scale_rope(model, "none")``: the model as first seen; its ``rope_parameters``."""
    if params:
        raise ConfigError(
            f"method {method!r} takes no parameters, got {', '.join(sorted(params))}"
        )
    _restore_model(model, modules, saved)
    _plain_attention(model)
    return copy.deepcopy(saved.rope_parameters)


def _trained(saved: _Original, original_length: int | None) -> int:
    """The trained context: given, else the config's original length, else its maximum."""
    trained = original_length or saved.rope_parameters.get("original_max_position_embeddings")
    return int(trained or saved.max_position_embeddings)


def _extend(model: Any, method: str, factor: float | None, original_length: int | None,
            seq_len: int | None, params: dict[str, Any]) -> dict[str, Any]:
    """``scale_rope`` for an attention-side method: RoPE as loaded, positions remapped in
    attention, the configured length the extended window."""
    from .extended_attention import check_extendable, install

    if seq_len is not None:
        raise ConfigError(f"{method!r} does not follow the sequence length; seq_len does not apply")
    check_extendable(model)
    modules = _rotary_modules(model)
    saved = _original(model, modules)
    plan = plan_extension(method, _trained(saved, original_length), factor, params)
    _restore_model(model, modules, saved)
    install(model, plan.map, modules[0].inv_freq)
    _set_configs(model, modules, saved.rope_parameters, plan.length)
    _record(model, method, plan.factor, None, dict(plan.params))
    return plan.rope_parameters(float(saved.rope_parameters["rope_theta"]))


def _plain_attention(model: Any) -> None:
    """Undo an attention-side method, if one was applied."""
    from .extended_attention import uninstall

    uninstall(model)


def _record(model: Any, method: str, factor: float | None, seq_len: int | None,
            params: dict[str, Any]) -> None:
    """Remember on the model what was applied (None once restored)."""
    applied = None if method in RESTORE_METHODS else {
        "method": method, "factor": factor, "seq_len": seq_len, "params": dict(params)}
    object.__setattr__(model, _APPLIED_ATTR, applied)


def _set_configs(model: Any, modules: list[Any], rope_parameters: dict[str, Any],
                 max_positions: int) -> None:
    """The scaled config on the model and on every rotary module with a config of its own."""
    configs = {id(m.config): m.config for m in modules if getattr(m, "config", None) is not None}
    for cfg in {id(model.config): model.config, **configs}.values():
        cfg.rope_parameters = copy.deepcopy(rope_parameters)
        cfg.max_position_embeddings = max_positions


def _set_modules(
    modules: list[Any], frequencies: RopeFrequencies, rope_type: str, max_positions: int
) -> None:
    """Give every rotary module the state transformers would build for the scaled config."""
    for module in modules:
        _set_buffer(module, "inv_freq", frequencies.inv_freq)
        _set_buffer(module, "original_inv_freq", frequencies.inv_freq)
        module.attention_scaling = frequencies.attention_scaling
        module.rope_type = rope_type
        module.max_seq_len_cached = max_positions
        module.original_max_seq_len = max_positions
        if "long_inv_freq" in module.__dict__:
            del module.__dict__["long_inv_freq"]


def _restore_model(model: Any, modules: list[Any], saved: _Original) -> None:
    """Put back the config and rotary state of the model as first seen."""
    config = model.config
    config.rope_parameters = copy.deepcopy(saved.rope_parameters)
    config.max_position_embeddings = saved.max_position_embeddings
    for module, state in zip(modules, saved.modules):
        _restore(module, state)
        if getattr(module, "config", config) is not config:
            module.config.rope_parameters = copy.deepcopy(saved.rope_parameters)
            module.config.max_position_embeddings = saved.max_position_embeddings
    object.__setattr__(model, _APPLIED_ATTR, None)


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
    following = length_dependent_rope_types()
    modules = [
        m
        for m in _rotary_modules(model)
        if isinstance(m.rope_type, str) and m.rope_type in following
    ]
    after: list[tuple[Any, _ModuleState]] = []
    for module in modules:
        # start from the fresh state: transformers' dynamic update only ever grows the base (and
        # LongRoPE's update overwrites inv_freq from scratch, so this changes nothing for it)
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
