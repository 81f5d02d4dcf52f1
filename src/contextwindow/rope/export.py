"""llama.cpp flags for an exported ``rope_parameters`` dict.

The dict is the interchange format (transformers config, vLLM override, what :func:`scale_rope`
returns), so flags are found by its ``rope_type``: the registered method exporting that type
builds them, or says why llama.cpp cannot express it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .extension import get_extension
from .registry import method_for_rope_type


def to_llamacpp_flags(
    rope_parameters: Mapping[str, Any], *, ctx_size: int | None = None,
    architecture: str | None = None,
) -> list[str]:
    """llama.cpp (``llama-cli`` / ``llama-server``) flags equivalent to a ``rope_parameters`` dict
    as returned by :func:`scale_rope`.

    default / NTK-aware: ``--rope-scaling none --rope-freq-base B``; linear: ``--rope-scaling
    linear --rope-scale s``; YaRN: ``--rope-scaling yarn --rope-scale s --yarn-orig-ctx L0`` (plus
    beta flags when not the defaults; a YaRN attention factor other than ``0.1 ln s + 1`` is
    ``--override-kv ARCH.rope.scaling.attn_factor=float:r``, which needs ``architecture``, the
    GGUF's ``general.architecture``). Dynamic NTK, Llama-3, LongRoPE, Self-Extend and DCA have
    no flag equivalent: ``ConfigError`` says why. ``ctx_size`` adds ``--ctx-size``. Checked
    inside llama.cpp by ``tests/e2e/test_llamacpp_rope.py``.
    """
    rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
    if "rope_theta" not in rope_parameters:
        raise ConfigError("rope_parameters needs a rope_theta to build llama.cpp flags")
    extension = get_extension(rope_type)
    if extension is not None:
        raise ConfigError(f"no llama.cpp equivalent for {rope_type!r}: {extension.unsupported}")
    method = method_for_rope_type(rope_type)
    if method is None:
        raise ConfigError(f"no llama.cpp equivalent for rope_type {rope_type!r}")
    if isinstance(method.llamacpp, str):
        raise ConfigError(f"no llama.cpp equivalent for {rope_type!r}: {method.llamacpp}")
    flags = method.llamacpp(rope_parameters, architecture)
    if ctx_size is not None:
        flags += ["--ctx-size", str(int(ctx_size))]
    return flags
