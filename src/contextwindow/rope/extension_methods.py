"""The built-in attention-side methods: Self-Extend and Dual Chunk Attention.

Each is a :class:`~.extension.PositionMap` builder registered with its parameter rule and its
reach. Both keep every distance RoPE sees below the trained length ``L``, without training:

* **Self-Extend** (Jin et al., "LLM Maybe LongLM", ICML 2024). Keys closer than the neighbour
  window ``w`` keep their exact distance; farther keys use grouped positions: the query at
  ``i // G + w - w // G``, the key at ``j // G``, so the distance is
  ``(i // G + w - w // G) - j // G`` (continuous at ``i - j = w``). Reaches ``(L - w) G + w``.
* **Self-Extend, dynamic** (``self-extend-dynamic``; this library's variant, in the spirit of
  dynamic NTK: change nothing the model was trained for). The neighbour window of the query at
  ``i`` is the widest that keeps its farthest grouped distance within ``L - 1``: ``w(i) =
  R + R // (G - 1)`` with ``R = L - 1 - i // G``, at most ``i + 1`` and at least ``w``. So a
  sequence within the trained length attends exactly as the unscaled model, a longer one
  groups only the keys beyond what the trained range can hold exactly, and from the reach on
  (where ``w(i)`` comes down to ``w``) it is the paper's map.
* **Dual Chunk Attention** (An et al., "Training-Free Long-Context Scaling of Large Language
  Models" (ChunkLlama), ICML 2024; Qwen2.5-1M). Positions are cut into chunks of ``c =
  chunk_size - local_window``; keys sit at ``j mod c``. Within a chunk the distance is exact
  (intra-chunk); keys of the previous chunk see the query at ``min(i mod c + c, chunk_size)``,
  exact for the first ``local_window`` positions of a chunk (successive-chunk); older chunks see
  it at ``min(2c - 1, chunk_size)`` (inter-chunk). No distance exceeds ``chunk_size``, at any
  length. As ChunkLlama's reference code: ``chunk_size`` 3L/4 and ``local_window`` L/16 by
  default.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .extension import PositionMap, positive_int, register_extension

# --- Self-Extend --------------------------------------------------------------------------


def _grouped_query(i: Any, group_size: int, window: int) -> Any:
    return i // group_size + window - window // group_size


def _grouped_key(j: Any, group_size: int) -> Any:
    return j // group_size


def _self_extend_reach(trained: int, params: Mapping[str, int]) -> int:
    """The authors' maximum extended window: ``(L - w) G + w``."""
    return (trained - params["window"]) * params["group_size"] + params["window"]


def _self_extend_choose(trained: int, target: int, given: Mapping[str, int], *,
                        method: str = "self-extend") -> dict[str, int]:
    """``w = L / 4`` (the authors' 1,024 for Llama-2's 4,096), and the smallest ``G >= 2`` that
    keeps the largest grouped position ``w + (N - w) / G`` within 2/3 of ``L``: the authors
    find larger groups work better than the smallest reaching ``N``, since the highest
    positions are the least trained."""
    window = positive_int(method, "window", given.get("window", trained // 4), 1, trained - 1)
    group = given.get("group_size")
    if group is None:
        spare = 2 * trained - 3 * window  # 3 (w G + N - w) <= 2 L G  <=>  G >= 3 (N - w) / spare
        if spare > 0:
            group = -(-3 * (target - window) // spare)
        else:  # a window past 2L/3: only the reach rule (L - w) G + w >= N is left
            group = -(-(target - window) // (trained - window))
        group = max(2, group)
    return {"group_size": group, "window": window}


_SELF_EXTEND_UNSUPPORTED = (
    "Self-Extend remaps positions inside attention at every step; vLLM has no equivalent, and "
    "llama.cpp's --grp-attn-n / --grp-attn-w is a different algorithm (it divides the stored "
    "positions of whole KV blocks) without server support: it runs here, with transformers and "
    "this library's attention function"
)


def _self_extend_params(method: str, trained: int, params: Mapping[str, int]) -> tuple[int, int]:
    """``(G, w)`` validated: ``G >= 2``, ``1 <= w < L`` (both Self-Extend maps take them)."""
    return (positive_int(method, "group_size", params["group_size"], 2),
            positive_int(method, "window", params["window"], 1, trained - 1))


@register_extension("self-extend", params=("group_size", "window"), choose=_self_extend_choose,
                    reach=_self_extend_reach, unsupported=_SELF_EXTEND_UNSUPPORTED)
def _self_extend(trained: int, params: Mapping[str, int]) -> PositionMap:
    group, window = _self_extend_params("self-extend", trained, params)
    return PositionMap(
        unit=1,
        thresholds=(window,),
        query=(None, functools.partial(_grouped_query, group_size=group, window=window)),
        key=(None, functools.partial(_grouped_key, group_size=group)),
    )


def _dynamic_window(i: Any, group_size: int, window: int, trained: int) -> Any:
    """The neighbour window of query position(s) ``i`` (an int or an int64 tensor) in
    ``self-extend-dynamic``: ``R + R // (G - 1)`` for ``R = L - 1 - i // G`` (the largest
    ``w'`` with ``i // G + w' - w' // G <= L - 1``), clamped to ``[window, i + 1]``."""
    room = trained - 1 - i // group_size
    widest = room + room // (group_size - 1)
    if isinstance(i, int):
        return max(window, min(i + 1, widest))
    import torch

    return torch.clamp(torch.minimum(i + 1, widest), min=window)


def _dynamic_query(i: Any, group_size: int, window: int, trained: int) -> Any:
    """The grouped query position with each query's own window."""
    return _grouped_query(i, group_size, _dynamic_window(i, group_size, window, trained))


@register_extension("self-extend-dynamic", params=("group_size", "window"),
                    choose=functools.partial(_self_extend_choose, method="self-extend-dynamic"),
                    reach=_self_extend_reach, unsupported=_SELF_EXTEND_UNSUPPORTED)
def _self_extend_dynamic(trained: int, params: Mapping[str, int]) -> PositionMap:
    group, window = _self_extend_params("self-extend-dynamic", trained, params)
    rules = {"group_size": group, "window": window, "trained": trained}
    return PositionMap(
        unit=1,
        thresholds=(functools.partial(_dynamic_window, **rules),),
        query=(None, functools.partial(_dynamic_query, **rules)),
        key=(None, functools.partial(_grouped_key, group_size=group)),
    )


# --- Dual Chunk Attention -----------------------------------------------------------------


def _chunk_key(j: Any, chunk: int) -> Any:
    return j % chunk


def _successive_query(i: Any, chunk: int, chunk_size: int) -> Any:
    return (i % chunk + chunk).clamp(max=chunk_size)


def _inter_query(i: Any, chunk: int, chunk_size: int) -> Any:
    import torch

    return torch.full_like(i, min(2 * chunk - 1, chunk_size))


def _dca_choose(trained: int, target: int, given: Mapping[str, int]) -> dict[str, int]:
    """ChunkLlama's defaults, whatever the target (no distance grows with the length):
    ``chunk_size = 3L / 4``, ``local_window = L / 16``."""
    return {"chunk_size": given.get("chunk_size", trained * 3 // 4),
            "local_window": given.get("local_window", trained // 16)}


_DCA_UNSUPPORTED = (
    "Dual Chunk Attention computes three position schemes inside attention; transformers and "
    "llama.cpp have none and vLLM removed its backend: it runs here, with transformers and this "
    "library's attention function"
)


@register_extension("dca", params=("chunk_size", "local_window"), choose=_dca_choose,
                    reach=lambda trained, params: None, unsupported=_DCA_UNSUPPORTED)
def _dca(trained: int, params: Mapping[str, int]) -> PositionMap:
    chunk_size = positive_int("dca", "chunk_size", params["chunk_size"], 2, trained - 1)
    local_window = positive_int("dca", "local_window", params["local_window"], 0,
                                chunk_size - 1)
    chunk = chunk_size - local_window
    rules = {"chunk": chunk, "chunk_size": chunk_size}
    key = functools.partial(_chunk_key, chunk=chunk)
    return PositionMap(
        unit=chunk,
        thresholds=(1, 2),
        query=(None, functools.partial(_successive_query, **rules),
               functools.partial(_inter_query, **rules)),
        key=(None, key, key),
    )
