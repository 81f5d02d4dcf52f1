"""RoPE context extension: linear, NTK-aware, dynamic NTK, YaRN, Llama-3 and LongRoPE scaling.

Three layers, from pure maths to a loaded model:

* a **registry** (:mod:`.registry`, methods in :mod:`.methods`): one pure function per method,
  mapping a :class:`RopeInputs` to :class:`RopeFrequencies`, registered with how it exports
  itself (transformers / vLLM ``rope_parameters``, llama.cpp flags);
* :func:`scale_rope` (:mod:`.apply`) applies a method **in place** to a loaded transformers model
  and returns the ``rope_parameters`` dict; ``method="none"`` restores the model as loaded;
  :func:`rope_length` keeps length-dependent methods exact when a sequence is fed in chunks;
* :func:`to_llamacpp_flags` (:mod:`.export`) turns that dict into llama.cpp command-line flags.
"""

from __future__ import annotations

from types import MappingProxyType

from .apply import applied_scaling, rope_length, scale_rope
from .export import to_llamacpp_flags
from .methods import default_inv_freq, dynamic_ntk_base, ntk_base
from .registry import (
    _REGISTRY,
    RESTORE_METHODS,
    RopeConfig,
    RopeFrequencies,
    RopeInputs,
    RopeMethod,
    available_methods,
    check_factor,
    compute,
    get_method,
    register,
)

__all__ = [
    "RESTORE_METHODS",
    "RopeConfig",
    "RopeFrequencies",
    "RopeInputs",
    "RopeMethod",
    "applied_scaling",
    "available_methods",
    "check_factor",
    "compute",
    "default_inv_freq",
    "dynamic_ntk_base",
    "get_method",
    "ntk_base",
    "register",
    "rope_length",
    "scale_rope",
    "to_llamacpp_flags",
]

#: Why llama.cpp cannot express the built-in methods that have no flags (by rope_type).
LLAMACPP_UNSUPPORTED = MappingProxyType(
    {m.rope_type: m.llamacpp for m in _REGISTRY.values() if isinstance(m.llamacpp, str)}
)
