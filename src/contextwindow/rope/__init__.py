"""RoPE context extension: linear, NTK-aware, dynamic NTK, YaRN, Llama-3 and LongRoPE scaling,
and the attention-side methods Self-Extend and Dual Chunk Attention.

Three layers, from pure maths to a loaded model:

* a **registry** (:mod:`.registry`, methods in :mod:`.methods`): one pure function per method,
  mapping a :class:`RopeInputs` to :class:`RopeFrequencies`, registered with how it exports
  itself (transformers / vLLM ``rope_parameters``, llama.cpp flags);
* :func:`scale_rope` (:mod:`.apply`) applies a method **in place** to a loaded transformers model
  and returns the ``rope_parameters`` dict; ``method="none"`` restores the model as loaded;
  :func:`rope_length` keeps length-dependent methods exact when a sequence is fed in chunks;
* :func:`to_llamacpp_flags` (:mod:`.export`) turns that dict into llama.cpp command-line flags.

Methods that change attention rather than frequencies have a sibling registry
(:mod:`.extension`, methods in :mod:`.extension_methods`, the attention function in
:mod:`.extended_attention`); ``scale_rope`` applies and restores them the same way.
"""

from __future__ import annotations

from . import extension_methods  # noqa: F401  (registers Self-Extend and DCA)
from .apply import applied_scaling, rope_length, scale_rope
from .export import to_llamacpp_flags
from .extension import get_extension, plan_extension
from .registry import (
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
    "get_extension",
    "get_method",
    "plan_extension",
    "register",
    "rope_length",
    "scale_rope",
    "to_llamacpp_flags",
]

# Kept importable from here (earlier releases listed them); not the API: the attention-side
# registry's parts and the formulas the built-in methods share, at home in the modules named.
from .extension import (  # noqa: F401
    ExtensionPlan,
    PositionMap,
    available_extensions,
    register_extension,
)
from .methods import default_inv_freq, dynamic_ntk_base, ntk_base  # noqa: F401

