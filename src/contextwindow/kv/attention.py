"""How the scored caches see attention weights, at the least cost transformers 5.x allows.

A transformers cache receives keys and values, never queries or attention weights, and SDPA
(the default attention) never materialises the weights. The alternatives and their costs:

* ``attn_implementation="eager"`` with ``output_attentions``: every layer materialises and
  returns ``heads x q x k`` weights for *all* queries, although TOVA needs one row and SnapKV a
  few; and the model must run eager attention for every cache.
* Recomputing queries from the cache: the cache never sees the hidden states.
* **A registered attention function** (what this module does): ``scored_attention`` computes the
  attention output with transformers' own SDPA function, unchanged, and -- only for a layer of
  a scored cache -- the softmax weights of the last ``rows`` queries (``rows = q`` for H2O, 1 for
  TOVA, the observation window for SnapKV) as one extra fp32 ``rows x k`` matmul per layer. A
  one-token decode step costs one extra dot product per cached key and head; a chunk scored in
  full (H2O) costs a second ``QK^T`` of the chunk, as eager attention would.

The cache layer hands itself over in ``update`` (called just before attention, in the same
layer, on the same thread) through a thread-local slot; ``scored_attention`` takes it and calls
``layer.observe(weights)``. For any other cache the slot is empty and the function is plain SDPA,
so switching a model to it (``use_scored_attention``) changes no other computation.

The weights assume a causal decoder with batch size 1 and no padding (what the caches accept):
the query at row ``i`` of a chunk of ``q`` sees the first ``k - q + i + 1`` keys. Logit
soft-capping and sliding-window masks are not applied to the *scores* (the output is exact).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import torch

from ..errors import ModelError

__all__ = ["SCORED_ATTENTION", "attention_weights", "hand_over", "use_scored_attention"]

SCORED_ATTENTION = "contextwindow_scored"
"""The name ``scored_attention`` is registered under (attention and mask interfaces)."""

_slot = threading.local()


class Observer(Protocol):
    """A cache layer that wants the attention weights of its last ``rows(q)`` queries."""

    def rows(self, queries: int) -> int: ...

    def observe(self, weights: torch.Tensor) -> None: ...


def hand_over(layer: Observer) -> None:
    """Called by a cache layer's ``update``: the next attention call on this thread scores for
    it."""
    _slot.layer = layer


def attention_weights(
    query: torch.Tensor, key: torch.Tensor, rows: int, scaling: float
) -> torch.Tensor:
    """Causal softmax weights of the last ``rows`` queries, ``[kv_heads, group, rows, keys]`` fp32.

    ``query`` is ``[1, heads, q, dim]`` and ``key`` ``[1, kv_heads, k, dim]`` (grouped-query
    attention: query head ``h`` reads KV head ``h // group``).
    """
    heads, length = query.shape[1], key.shape[-2]
    kv_heads = key.shape[1]
    group = heads // kv_heads
    last = query[0, :, -rows:, :].float().reshape(kv_heads, group * rows, -1)
    scores = torch.matmul(last, key[0].float().transpose(-1, -2)) * scaling
    scores = scores.view(kv_heads, group, rows, length)
    if rows > 1:  # the newest query sees every key; earlier ones not the keys after them
        first = length - rows  # the key index the first scored query sits at
        hidden = torch.arange(length, device=key.device) > (
            first + torch.arange(rows, device=key.device)
        )[:, None]
        scores = scores.masked_fill(hidden, float("-inf"))
    return scores.softmax(dim=-1)


def scored_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention; also feeds a waiting scored-cache layer its weights."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    layer = getattr(_slot, "layer", None)
    if layer is not None:
        _slot.layer = None
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        layer.observe(attention_weights(query, key, layer.rows(query.shape[-2]), scaling))
    return output


def use_scored_attention(model: Any) -> None:
    """Register :func:`scored_attention` (once) and switch ``model`` to it.

    The model then runs SDPA as before for every cache, plus the scores a scored cache asks for.
    ``ModelError`` when the model cannot switch its attention (not built on ``AttentionInterface``).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    current = model.config._attn_implementation or ""
    if current.startswith("contextwindow_") and current != SCORED_ATTENTION:
        # switching to SDPA would silently drop it (Self-Extend / DCA: contextwindow.rope)
        raise ModelError(f"{type(model).__name__} runs {current!r} attention, which a scored "
                         "cache cannot score; use a DynamicCache or the sink cache with it")
    AttentionInterface.register(SCORED_ATTENTION, scored_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SCORED_ATTENTION, sdpa_mask)
    if model.config._attn_implementation == SCORED_ATTENTION:
        return
    model.set_attn_implementation(SCORED_ATTENTION)
    if model.config._attn_implementation != SCORED_ATTENTION:
        raise ModelError(
            f"{type(model).__name__} cannot switch its attention implementation, so a scored "
            "cache cannot see attention weights"
        )
