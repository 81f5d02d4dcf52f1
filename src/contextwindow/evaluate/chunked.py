"""How the long-context evaluations stay within memory: what a length needs, and a decoder fed in
chunks with the full-vocabulary ``lm_head`` applied to a few positions at a time.

:func:`estimate_memory` says up front what an evaluation of a given length needs;
:func:`check_memory` raises :class:`~contextwindow.errors.ResourceError` when that does not fit.
The rest splits a causal LM into its decoder body and its head, so perplexity by position and
passkey retrieval never hold logits for every position at once.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelError, ResourceError
from ..models.hf import forward

__all__ = [
    "available_memory",
    "cached_forward",
    "check_memory",
    "estimate_memory",
    "head_logits",
    "model_device",
    "prefill",
    "split_model",
    "truncate_cache",
]

# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes of RAM available to a new allocation (psutil, else /proc/meminfo, else total)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is usually present
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))  # pragma: no cover


def _efficient_attention(model: Any) -> bool:
    """Attention that never materialises the scores (Self-Extend / DCA's included)."""
    from ..rope.extended_attention import EXTENDED_ATTENTION

    efficient = ("sdpa", "flash_attention_2", EXTENDED_ATTENTION)
    return getattr(model.config, "_attn_implementation", "eager") in efficient


def estimate_memory(
    model: Any, length: int, *, chunk: int = 512, prefill_chunk: int | None = None
) -> int:
    """Bytes of working memory (beyond the weights) an evaluation of ``length`` tokens needs.

    Counts the KV cache, the activations of one decoder layer over the longest chunk fed at once
    (``prefill_chunk`` or the whole length), the attention scores when the attention
    implementation materialises them (eager), and ``chunk`` positions of full-vocabulary logits,
    with a 1.5x margin. Deliberately rough: it answers "will this fit", not "how much exactly".
    """
    cfg = model.config
    itemsize = next(model.parameters()).element_size()
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    layers = cfg.num_hidden_layers
    vocab = cfg.vocab_size
    q = min(length, prefill_chunk or length)  # queries processed at once
    kv_cache = 2 * layers * kv_heads * head_dim * length * itemsize
    activations = q * (8 * hidden + 3 * inter + 2 * (heads + 2 * kv_heads) * head_dim) * itemsize
    rope_tables = 4 * q * head_dim * 4
    # a boolean mask is built for chunks on top of a cache; a single causal forward with SDPA
    # skips it
    mask = 0 if (q == length and _efficient_attention(model)) else q * length
    if _efficient_attention(model):
        attention = 2 * heads * q * head_dim * itemsize
    else:
        attention = 2 * heads * q * length * itemsize
    logits = 3 * min(chunk, length) * vocab * 4
    hidden_out = length * hidden * itemsize
    total = kv_cache + activations + rope_tables + mask + attention + logits + hidden_out
    return int(total * 1.5)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(model: Any, length: int, *, max_memory: int | None = None, **kwargs: Any) -> int:
    """:func:`estimate_memory`, raising ``ResourceError`` if it exceeds ``max_memory`` (default:
    the RAM available now). Returns the estimate."""
    need = estimate_memory(model, length, **kwargs)
    limit = available_memory() if max_memory is None else int(max_memory)
    if need > limit:
        raise ResourceError(
            f"evaluating {length} tokens needs about {_gib(need)} of memory beyond the model "
            f"weights, but only {_gib(limit)} is available; use a shorter length (or a machine "
            "with more RAM)"
        )
    return need


# ---------------------------------------------------------------------------------------------
# Model plumbing
# ---------------------------------------------------------------------------------------------


def split_model(model: Any) -> tuple[Any, Any]:
    """The decoder body and the ``lm_head`` of a causal LM, to apply the head only where needed."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise ModelError(f"{type(model).__name__} does not expose a decoder body and an lm_head")
    return decoder, head


def head_logits(model: Any, head: Any, hidden: Any) -> Any:
    """fp32 logits of ``hidden``, soft-capped (``final_logit_softcapping``) as the model's own
    forward does."""
    logits = head(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        import torch

        logits = torch.tanh(logits / cap) * cap
    return logits


def model_device(model: Any) -> Any:
    """Where the model's weights are: the device its inputs must be on."""
    return next(model.parameters()).device


def cached_forward(decoder: Any, ids: Any, cache: Any) -> Any:
    """One decoder forward on top of ``cache``; the hidden states (the head is applied later)."""
    return forward(decoder, ids, cache).last_hidden_state


def prefill(decoder: Any, ids: Any, cache: Any, prefill_chunk: int | None) -> Any:
    """Feed ``ids`` (1, n) through the decoder on top of ``cache``; return the last hidden state."""
    n = ids.shape[1]
    step = prefill_chunk or n
    hidden = None
    for start in range(0, n, step):
        hidden = cached_forward(decoder, ids[:, start : start + step], cache)[:, -1:]
    return hidden


def truncate_cache(cache: Any, length: int) -> None:
    """Drop everything after the first ``length`` positions of a KV cache."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # a negative value removes that many tokens (all transformers versions)

