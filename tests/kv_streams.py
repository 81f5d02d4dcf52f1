"""Feeding a token stream through a KV cache, and the independent re-statement of what a sink
cache keeps, shared by the cache tests on every model family."""

from __future__ import annotations

from typing import Any

import torch

from contextwindow.kv import SinkCache


def stream(model: Any, cache: Any, ids: torch.Tensor, chunks: list[int]) -> list[torch.Tensor]:
    """Feed ``ids`` in chunks of the given sizes; return each chunk's logits."""
    out, start = [], 0
    with torch.no_grad():
        for size in chunks:
            out.append(model(input_ids=ids[None, start : start + size], cache=cache).logits[0])
            start += size
    return out


def kept_ids(seen: int, sinks: int, window: int) -> list[int]:
    """Stream indices a sink cache holds after ``seen`` tokens (an independent re-statement)."""
    if seen <= sinks + window:
        return list(range(seen))
    return list(range(sinks)) + list(range(seen - window, seen))


def assert_sink_cache_equals_fresh_forwards(model: Any, ids: torch.Tensor, sinks: int,
                                            window: int, chunks: list[int]) -> None:
    """Stream ``ids`` through a sink cache in ``chunks``: each chunk's logits must equal a fresh
    forward over the tokens the cache kept plus the chunk (exact for a one-layer model, whose
    K/V depend only on a token and its position)."""
    cache = SinkCache(model, sinks=sinks, window=window)
    seen = 0
    for size in chunks:
        (logits,) = stream(model, cache, ids[seen:], [size])
        context = kept_ids(seen, sinks, window) + list(range(seen, seen + size))
        with torch.no_grad():
            expected = model(input_ids=ids[context][None]).logits[0, -size:]
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        seen += size
