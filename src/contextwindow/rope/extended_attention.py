"""Self-Extend and Dual Chunk Attention as a registered transformers 5.x attention function.

transformers hands an attention function queries and keys already rotated at their true
positions (keys from the KV cache included). A view of a :class:`~.extension.PositionMap` is
then one more rotation per token -- by ``query[v](i) - i`` and ``key[v](j) - j`` -- with fp32
cos/sin from fp64 angles (:meth:`~contextwindow.kv.RopeShift.tables`). The tables are indexed
by absolute position, grown on demand and shared by every layer of the model, so a decode step
costs one rotation of the cached keys per extra view and layer, not a recomputation of angles.

Where the query is: the newest query sits at the last position of ``position_ids`` (the model
passes them on to attention), and the keys are consecutive positions ending there -- what a
``DynamicCache`` holds, and what the sink cache presents (:mod:`contextwindow.kv.sink`). Keys the
cache does not hold cannot be remapped, so a cache holding more keys than positions (static,
padded) is refused; so are padded batches (the mask function below).

Memory is O(n x block), never O(n^2): queries go in blocks of ``block`` positions (cut at chunk
boundaries for DCA); for each view, a block's keys split into an interval every row of the block
sees in that view (no mask) and at most two thin edges (an explicit mask). Each piece returns its
output and log-sum-exp -- from PyTorch's fused CPU attention kernel, or elsewhere from a tiled
matmul -- and the pieces merge exactly by log-sum-exp: one softmax over every key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ModelError
from ..kv import RopeShift
from .extension import PositionMap

__all__ = ["EXTENDED_ATTENTION", "ExtendedState", "extended_attention", "extended_forward"]

EXTENDED_ATTENTION = "contextwindow_extended"
"""The name the attention function (and its mask function) are registered under."""
STATE_ATTR = "contextwindow_extension"
"""The attribute of each attention module holding the model's :class:`ExtendedState`."""
BLOCK = 256  # queries per block: larger blocks recompute more of the masked edges
_TILE = 1024  # keys per matmul in the portable path

_FUSED = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class ExtendedState:
    """One model's position map, rotation and cos/sin tables (absolute positions), shared by
    its attention layers; ``fused=False`` forces the portable kernel (tests compare both)."""

    def __init__(self, pmap: PositionMap, inv_freq: torch.Tensor, block: int = BLOCK,
                 fused: bool = True) -> None:
        self.map = pmap
        self.shift = RopeShift(inv_freq)
        self.block = block
        self.fused = fused
        self._tables: dict[tuple[int, str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, view: int, side: str, stop: int, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (view, side, device)
        table = self._tables.get(key)
        if table is None or table[0].shape[0] < stop:
            size = max(stop, 2 * table[0].shape[0] if table is not None else 4096)
            with torch.inference_mode(False):  # kept across calls, in and out of inference mode
                p = torch.arange(size, dtype=torch.int64)
                table = self.shift.tables(self.map.positions(view, side, p) - p, device)
            self._tables[key] = table
        return table

    def moved(self, x: torch.Tensor, view: int, side: str, start: int) -> torch.Tensor:
        """``x`` (``[..., n, head_dim]``, rotated at positions ``start..start+n-1``) rotated to
        ``view``'s positions for ``side`` ("query" or "key")."""
        rule = (self.map.query if side == "query" else self.map.key)[view]
        if rule is None or x.shape[-2] == 0:
            return x
        stop = start + x.shape[-2]
        cos, sin = self._table(view, side, stop, x.device)
        return self.shift.rotate(x, cos[start:stop], sin[start:stop])


def _positions(position_ids: torch.Tensor | None, queries: int, keys: int) -> int:
    """The position of the first key; the keys run consecutively to the newest query's."""
    last = keys - 1
    if position_ids is not None:
        rows = position_ids.reshape(-1, position_ids.shape[-1])
        last = int(rows[0, -1])
        if int(rows[0, -1] - rows[0, 0]) != queries - 1 or not bool((rows == rows[0]).all()):
            raise ModelError("Self-Extend / DCA attention needs consecutive position ids, the "
                             "same in every row of the batch")
    first = last - keys + 1
    if first < 0:
        raise ModelError(
            f"the cache hands attention {keys} keys for positions up to {last}: it holds keys "
            "that are no position (a static or padded cache); use a DynamicCache"
        )
    return first


def _query_blocks(start: int, stop: int, block: int, unit: int) -> Iterator[tuple[int, int]]:
    """``[a, b]`` (inclusive positions) covering ``start..stop``, at most ``block`` long and
    never across a multiple of ``unit`` when units are chunks (``unit > 1``)."""
    a = start
    while a <= stop:
        b = min(stop, a + block - 1)
        if unit > 1:
            b = min(b, (a // unit + 1) * unit - 1)
        yield a, b
        a = b + 1


def _segments(pmap: PositionMap, view: int, a: int, b: int, first: int
              ) -> Iterator[tuple[int, int, bool]]:
    """Key intervals ``[c, e]`` of ``view`` for queries ``a..b``, each flagged when only some
    of its pairs belong to the view (it then needs a mask)."""
    lo_a, hi_a = pmap.span(view, a)
    lo_b, hi_b = pmap.span(view, b)
    lo_a, lo_b = max(lo_a, first), max(lo_b, first)
    if lo_a > hi_b:
        return
    if lo_b > hi_a:  # no key is in the view for every row
        yield lo_a, hi_b, True
        return
    if lo_a < lo_b:
        yield lo_a, lo_b - 1, True
    yield lo_b, hi_a, False
    if hi_a < hi_b:
        yield hi_a + 1, hi_b, True


def _tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and log-sum-exp by key tiles with an online softmax (any device)."""
    batch, heads, n, _ = q.shape
    group = heads // k.shape[1]
    qf = q.float().reshape(batch, k.shape[1], group, n, -1)
    top = torch.full(qf.shape[:-1], float("-inf"), device=q.device)
    total = torch.zeros_like(top)
    acc = torch.zeros((*qf.shape[:-1], v.shape[-1]), device=q.device)
    for c in range(0, k.shape[-2], _TILE):
        kt, vt = k[:, :, None, c:c + _TILE].float(), v[:, :, None, c:c + _TILE].float()
        scores = torch.matmul(qf, kt.transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask[:, c:c + _TILE], float("-inf"))
        new_top = torch.maximum(top, scores.amax(-1))
        safe = torch.where(torch.isinf(new_top), 0.0, new_top)
        weights = torch.exp(scores - safe[..., None])
        carry = torch.exp(top - safe)
        total = total * carry + weights.sum(-1)
        acc = acc * carry[..., None] + torch.matmul(weights, vt)
        top = new_top
    out = acc / total.clamp_min(torch.finfo(torch.float32).tiny)[..., None]
    lse = torch.where(total > 0, top + total.log(), float("-inf"))
    return out.reshape(batch, heads, n, -1), lse.reshape(batch, heads, n)


def _attend(state: ExtendedState, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One piece: output and log-sum-exp (``-inf`` for rows the mask leaves no key)."""
    if state.fused and _FUSED is not None and q.device.type == "cpu":
        additive = None
        if mask is not None:
            additive = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
        out, lse = _FUSED(q, k, v, 0.0, False, attn_mask=additive, scale=scale)
    else:
        out, lse = _tiled(q, k, v, mask, scale)
    if mask is not None:  # the fused kernel reports 0, not -inf, for a row without keys
        lse = lse.masked_fill(~mask.any(-1), float("-inf"))
    return out, lse


def _merge(pieces: list[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> torch.Tensor:
    """The outputs of disjoint key sets combined as one softmax over all of them."""
    lses = torch.stack([lse.float() for _, lse in pieces])
    weights = torch.exp(lses - lses.amax(0))
    out = sum(w[..., None] * o.float() for w, (o, _) in zip(weights, pieces))
    return (out / weights.sum(0)[..., None]).to(dtype)


def extended_forward(state: ExtendedState, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, first: int, scale: float) -> torch.Tensor:
    """Attention of ``query`` (``[batch, heads, n, dim]``, the newest ``n`` positions) over
    ``key`` / ``value`` (positions ``first``, ``first + 1``, ...) under ``state``'s map; the
    output is ``[batch, heads, n, dim]``."""
    pmap = state.map
    last = first + key.shape[-2] - 1
    q0 = last - query.shape[-2] + 1
    queries = [state.moved(query, v, "query", q0) for v in range(pmap.views)]
    keys = [state.moved(key, v, "key", first) for v in range(pmap.views)]
    out = torch.empty_like(query)
    for a, b in _query_blocks(q0, last, state.block, pmap.unit):
        pieces = []
        rows = torch.arange(a, b + 1, device=query.device)[:, None]
        for v in range(pmap.views):
            for c, e, masked in _segments(pmap, v, a, b, first):
                cols = torch.arange(c, e + 1, device=query.device)[None]
                mask = (pmap.view(rows, cols) == v) & (cols <= rows) if masked else None
                pieces.append(_attend(state, queries[v][..., a - q0:b - q0 + 1, :],
                                      keys[v][..., c - first:e - first + 1, :],
                                      value[..., c - first:e - first + 1, :], mask, scale))
        out[..., a - q0:b - q0 + 1, :] = _merge(pieces, query.dtype)
    return out


def extended_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, *, scaling: float | None = None,
                       dropout: float = 0.0, position_ids: torch.Tensor | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The function registered as ``EXTENDED_ATTENTION`` (transformers' attention signature)."""
    state = getattr(module, STATE_ATTR, None)
    if state is None:
        raise ModelError(f"{type(module).__name__} runs {EXTENDED_ATTENTION!r} attention but "
                         "has no position map: apply it with scale_rope")
    if dropout:
        raise ModelError("Self-Extend / DCA attention is for inference (no attention dropout)")
    first = _positions(position_ids, query.shape[-2], key.shape[-2])
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = extended_forward(state, query, key, value, first, scale)
    return out.transpose(1, 2).contiguous(), None


def unpadded_mask(*, attention_mask: torch.Tensor | None = None, mask_function: Any = None,
                  **kwargs: Any) -> None:
    """The mask function registered with it: no mask is built (causality is in the blocks);
    padding and non-causal patterns are refused rather than ignored."""
    from transformers.masking_utils import causal_mask_function

    if mask_function is not None and mask_function is not causal_mask_function:
        raise ModelError("Self-Extend / DCA attention supports plain causal masks only")
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ModelError("Self-Extend / DCA attention does not support padded batches")


# --- installing it on a model ---------------------------------------------------------------

_SAVED_ATTR = "_contextwindow_extension_attn"


def _attention_modules(model: Any) -> list[Any]:
    """The modules that call the attention interface (they hold ``scaling`` and ``is_causal``)."""
    return [m for m in model.modules() if hasattr(m, "scaling") and hasattr(m, "is_causal")]


def check_extendable(model: Any) -> None:
    """``ModelError`` unless every layer attends globally through ``AttentionInterface``."""
    from ..models.rotary import layer_types

    config = model.config.get_text_config(decoder=True)
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window",
                                                                  True)
    if sliding or any(t != "full_attention" for t in layer_types(model)):
        raise ModelError(f"{type(model).__name__} has sliding-window layers; Self-Extend and DCA "
                         "need every layer to attend to the whole sequence")
    if not _attention_modules(model) or not hasattr(model, "set_attn_implementation"):
        raise ModelError(f"{type(model).__name__} does not run its attention through "
                         "transformers' AttentionInterface")


def install(model: Any, pmap: PositionMap, inv_freq: torch.Tensor) -> None:
    """Switch ``model`` to the extended attention with ``pmap`` (after :func:`check_extendable`);
    the implementation it ran before is kept for :func:`uninstall`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(EXTENDED_ATTENTION, extended_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(EXTENDED_ATTENTION, unpadded_mask)
    if getattr(model, _SAVED_ATTR, None) is None:
        object.__setattr__(model, _SAVED_ATTR, model.config._attn_implementation)
    model.set_attn_implementation(EXTENDED_ATTENTION)
    state = ExtendedState(pmap, inv_freq)
    for module in _attention_modules(model):
        module.__dict__[STATE_ATTR] = state


def uninstall(model: Any) -> None:
    """Put back the attention ``model`` ran before :func:`install` (nothing if never installed)."""
    saved = getattr(model, _SAVED_ATTR, None)
    if saved is None:
        return
    model.set_attn_implementation(saved)
    for module in _attention_modules(model):
        module.__dict__.pop(STATE_ATTR, None)
    object.__setattr__(model, _SAVED_ATTR, None)


def extension_state(model: Any) -> ExtendedState | None:
    """The state the model's attention layers share, or ``None`` when not extended."""
    return next((m.__dict__[STATE_ATTR] for m in _attention_modules(model)
                 if STATE_ATTR in m.__dict__), None)
