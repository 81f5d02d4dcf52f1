"""Dense statements of Self-Extend and Dual Chunk Attention, written from the papers' formulas and
calling nothing in contextwindow.rope.extension*: the distance matrix RoPE should see, and
attention computed pair by pair from it in float64.

Queries and keys arrive rotated at their true positions (as transformers hands them to an
attention function). For each pair the key is moved once more, to position ``i - distance(i,
j)``, so the dot product sees exactly ``distance(i, j)``; nothing is blocked, merged or cached.
"""

from __future__ import annotations

import torch


def self_extend_distance(i: torch.Tensor, j: torch.Tensor, group: int, window: int):
    """Jin et al.: exact within the neighbour window, grouped beyond it."""
    grouped = (i // group + window - window // group) - j // group
    return torch.where(i - j < window, i - j, grouped)


def dynamic_window(i: torch.Tensor, group: int, window: int, trained: int) -> torch.Tensor:
    """The widest neighbour window ``w'`` in ``[window, i + 1]`` whose grouped query position
    ``i // G + w' - w' // G`` (the farthest key's distance) stays below ``trained``, searched
    over every candidate; ``window`` when none does."""
    candidates = torch.arange(window, trained + 1)  # a window never needs more than L
    fits = (i[..., None] // group + candidates - candidates // group <= trained - 1) & (
        candidates <= i[..., None] + 1)
    widest = torch.where(fits, candidates, -1).amax(-1)
    return torch.where(widest >= 0, widest, window)


def self_extend_dynamic_distance(i: torch.Tensor, j: torch.Tensor, group: int, window: int,
                                 trained: int):
    """Self-Extend with each query's window as wide as the trained range allows."""
    w = dynamic_window(i, group, window, trained)
    grouped = (i // group + w - w // group) - j // group
    return torch.where(i - j < w, i - j, grouped)


def dca_distance(i: torch.Tensor, j: torch.Tensor, chunk_size: int, local_window: int):
    """ChunkLlama: intra-chunk exact, successive chunk with the clamped query, older chunks at
    the inter-chunk query position; keys at ``j mod c``."""
    c = chunk_size - local_window
    key = j % c
    successive = torch.clamp(i % c + c, max=chunk_size) - key
    inter = min(2 * c - 1, chunk_size) - key
    same, previous = i // c == j // c, i // c - j // c == 1
    return torch.where(same, i - j, torch.where(previous, successive, inter))


TRAINED = 256
"""The trained length of the tests' tiny model (the dynamic window depends on it)."""


def distance(method: str, params: dict, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    if method == "self-extend":
        return self_extend_distance(i, j, params["group_size"], params["window"])
    if method == "self-extend-dynamic":
        return self_extend_dynamic_distance(i, j, params["group_size"], params["window"],
                                            TRAINED)
    return dca_distance(i, j, params["chunk_size"], params["local_window"])


def _rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of ``x`` by ``angle`` (``[..., dim / 2]``), float64."""
    half = x.shape[-1] // 2
    cos, sin = torch.cat((angle.cos(), angle.cos()), -1), torch.cat((angle.sin(), angle.sin()), -1)
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def dense_attention(method: str, params: dict, inv_freq: torch.Tensor, query: torch.Tensor,
                    key: torch.Tensor, value: torch.Tensor, first: int, scale: float):
    """``[batch, heads, n, dim]`` output for the newest ``n`` queries over keys at positions
    ``first, first + 1, ...`` (float64 throughout)."""
    n, k_len = query.shape[-2], key.shape[-2]
    last = first + k_len - 1
    i = torch.arange(last - n + 1, last + 1)[:, None]
    j = torch.arange(first, last + 1)[None]
    causal = j <= i
    # the key moves from j to i - distance: the query then sees it at that distance
    delta = torch.where(causal, (i - j) - distance(method, params, i, j), 0)  # [n, k]
    angle = delta[..., None].double() * inv_freq.double()  # [n, k, dim / 2]
    group = query.shape[1] // key.shape[1]
    k = key.double().repeat_interleave(group, 1)  # [b, h, k, d]
    moved = _rotate(k[:, :, None], angle[None, None])  # [b, h, n, k, d]
    scores = (query.double()[:, :, :, None, :] * moved).sum(-1) * scale
    scores = scores.masked_fill(~causal, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ value.double().repeat_interleave(group, 1)
