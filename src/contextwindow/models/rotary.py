"""Where a transformers model keeps its RoPE frequencies, per decoder layer.

Most decoders (Llama, Qwen2, Mistral, Phi...) hold one rotary embedding with one ``inv_freq``
shared by every layer. Gemma-3 holds one module with a set of frequencies per *layer type*
(``sliding_attention_inv_freq``: local layers, base 10k; ``full_attention_inv_freq``: global
layers, base 1e6, linearly scaled in the larger checkpoints) and picks them by
``config.layer_types[i]``. The sink cache re-rotates each layer's keys with that layer's
frequencies, and RoPE scaling rewrites the frequencies transformers itself would scale.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelError

__all__ = ["layer_inv_freqs", "layer_types", "rotary_embedding"]


def _is_rotary(module: Any) -> bool:
    if hasattr(module, "inv_freq") and hasattr(module, "rope_type"):
        return True
    types = getattr(module, "layer_types", None) or ()
    return bool(types) and all(hasattr(module, f"{t}_inv_freq") for t in types)


def rotary_embedding(model: Any) -> Any:
    """The model's rotary-embedding module, or ``ModelError`` if it has none.

    transformers 5.x keeps one per decoder (``model.model.rotary_emb``); the attention layers
    receive its cos/sin. Single-frequency modules have ``inv_freq``; Gemma-3's has
    ``<layer type>_inv_freq`` for each of its ``layer_types``.
    """
    for module in model.modules():
        if _is_rotary(module):
            return module
    raise ModelError(
        f"{type(model).__name__} has no rotary position embedding (RoPE); "
        "sink re-positioning and RoPE scaling need a RoPE decoder such as Llama, Qwen2 or Gemma-3"
    )


def layer_types(model: Any) -> list[str]:
    """Each decoder layer's attention type (``"full_attention"`` when the config has none)."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None)
    return list(types) if types else ["full_attention"] * config.num_hidden_layers


def layer_inv_freqs(model: Any) -> list[Any]:
    """The ``inv_freq`` tensor each decoder layer rotates its queries and keys with."""
    rotary = rotary_embedding(model)
    if hasattr(rotary, "inv_freq"):
        return [rotary.inv_freq] * len(layer_types(model))
    return [getattr(rotary, f"{kind}_inv_freq") for kind in layer_types(model)]
