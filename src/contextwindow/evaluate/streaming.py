"""Streaming perplexity: score a long text chunk by chunk through a KV cache.

Three ways to give a model a long text, all scored token by token (NLL of each token given what
came before it):

* :func:`streaming_perplexity` with ``cache=None`` -- dense attention (a ``DynamicCache`` that keeps
  everything): memory grows with the stream and positions run past the trained length.
* :func:`streaming_perplexity` with a :class:`~contextwindow.kv.SinkCache` -- attention sinks plus a
  window (or, with ``sinks=0``, a plain window): constant memory and cost per token.
* :func:`recompute_perplexity` -- the quality reference for a window: every scored block gets a
  fresh forward over the ``window`` tokens before it, so no cached state is ever stale. It costs a
  full forward per block, hence the option to score only a few blocks per segment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models import model_device
from ..models.hf import encode_prefix, forward

__all__ = [
    "StreamResult",
    "encode_text",
    "recompute_perplexity",
    "streaming_perplexity",
]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` as an evaluation advances (tokens, blocks or trials)."""


@dataclass
class StreamResult:
    """Per-token NLL of one run over a token stream.

    ``positions[i]`` is the index (in the token stream) of the token whose NLL is ``nll[i]``; it is
    every index from 1 for streamed runs, and a sample for the re-computation baseline.
    """

    label: str
    positions: list[int]
    nll: list[float]
    seconds: float = 0.0
    max_cache_tokens: int = 0
    max_cache_bytes: int = 0
    chunk_seconds: list[tuple[int, float]] = field(default_factory=list)
    """``(tokens seen before the forward, seconds for it)`` per forward pass."""

    @property
    def tokens(self) -> int:
        """How many tokens were scored."""
        return len(self.nll)

    @property
    def ppl(self) -> float:
        """Perplexity over every scored token."""
        return math.exp(sum(self.nll) / len(self.nll)) if self.nll else math.nan

    def segment_ppl(self, size: int, total: int | None = None) -> list[float | None]:
        """Perplexity per segment ``[k*size, (k+1)*size)`` of stream positions.

        ``None`` for a segment with no scored token. ``total`` (stream length) fixes the number of
        segments; by default it ends at the last scored position.
        """
        if size < 1:
            raise ConfigError(f"segment size must be >= 1, got {size}")
        end = total if total is not None else (max(self.positions) + 1 if self.positions else 0)
        count = math.ceil(end / size)
        sums = [0.0] * count
        ns = [0] * count
        for pos, value in zip(self.positions, self.nll):
            k = pos // size
            if k < count:
                sums[k] += value
                ns[k] += 1
        return [math.exp(s / n) if n else None for s, n in zip(sums, ns)]


def encode_text(tokenizer: Any, text: str | Sequence[int], max_tokens: int | None = None) -> Any:
    """Token ids as a 1-D LongTensor; ``text`` may already be ids (then ``tokenizer`` may be None).

    Only a prefix of a long text is tokenized when ``max_tokens`` is given.
    """
    import torch

    if isinstance(text, str):
        if tokenizer is None:
            raise ConfigError("a tokenizer is needed to score text (or pass token ids)")
        if max_tokens is None:
            ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        else:
            ids = encode_prefix(tokenizer, text, max_tokens, add_special_tokens=True)
    else:
        ids = list(text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ConfigError("need at least 2 tokens to score")
    return torch.tensor(ids, dtype=torch.long)


def streaming_perplexity(
    model: Any,
    tokenizer: Any,
    text: str | Sequence[int],
    *,
    cache: Any = None,
    chunk: int = 64,
    max_tokens: int | None = None,
    label: str | None = None,
    progress: Progress | None = None,
) -> StreamResult:
    """Score ``text`` by feeding it ``chunk`` tokens at a time through ``cache``.

    Positions are left to the model (it numbers new tokens from ``cache.get_seq_length()``), which
    is what a sink cache relies on. ``cache=None`` uses a fresh ``DynamicCache`` (dense attention).
    A token at offset ``j`` of a chunk sees the cached tokens plus the ``j`` chunk tokens before it,
    so with a sink cache its context is ``sinks + window + j`` tokens.
    """
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    from ..kv.sink import cache_nbytes

    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    ids = encode_text(tokenizer, text, max_tokens).to(model_device(model))
    total = ids.numel()
    if cache is None:
        cache = DynamicCache(config=model.config)
        label = label or "dense"
    result = StreamResult(label=label or type(cache).__name__, positions=[], nll=[])
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, total - 1, chunk):
            piece = ids[start : min(start + chunk, total - 1)]  # the last token is only a target
            tick = time.perf_counter()
            logits = forward(model, piece[None], cache).logits[0]
            result.chunk_seconds.append((start, time.perf_counter() - tick))
            targets = ids[start + 1 : start + 1 + piece.numel()]
            nll = F.cross_entropy(logits[: targets.numel()].float(), targets, reduction="none")
            result.nll.extend(nll.tolist())
            result.positions.extend(range(start + 1, start + 1 + targets.numel()))
            result.max_cache_tokens = max(result.max_cache_tokens, cache.get_seq_length())
            result.max_cache_bytes = max(result.max_cache_bytes, cache_nbytes(cache))
            if progress is not None:
                progress(start + piece.numel(), total - 1)
    result.seconds = time.perf_counter() - started
    return result


def recompute_blocks(
    total: int, *, stride: int, segment: int | None = None, samples: int | None = None
) -> list[int]:
    """First target position of each scored block of ``stride`` tokens.

    Every block from position 1 when ``samples`` is None; otherwise ``samples`` evenly spaced,
    centred blocks inside each ``segment`` of the stream.
    """
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    if samples is None:
        return list(range(1, total, stride))
    if samples < 1 or segment is None or segment < stride:
        raise ConfigError("sampling needs samples >= 1 and segment >= stride")
    starts: list[int] = []
    part = segment / samples
    for seg_start in range(0, total, segment):
        for i in range(samples):
            start = seg_start + int(i * part + (part - stride) / 2)
            start = max(start, seg_start, 1)
            if start < total and start + stride <= min(seg_start + segment, total):
                starts.append(start)
    return sorted(set(starts))


def recompute_perplexity(
    model: Any,
    tokenizer: Any,
    text: str | Sequence[int],
    *,
    window: int = 1024,
    stride: int = 64,
    max_tokens: int | None = None,
    segment: int = 2048,
    samples: int | None = None,
    label: str = "recompute",
    progress: Progress | None = None,
) -> StreamResult:
    """Sliding window with re-computation: the reference a windowed cache should approach.

    The block of targets ``[t, t+stride)`` is scored by one fresh forward over tokens
    ``[t-1-window, t+stride-1)`` (positions from 0): target ``t+i`` sees the ``window`` tokens a
    cache of that size holds when token ``t-1`` is fed, plus tokens ``t-1 .. t+i-1``. These are
    exactly the contexts of :func:`streaming_perplexity` with a cache of ``sinks + window =
    window`` tokens and ``chunk = stride`` (blocks start at 1, 1+stride, ...), so the two differ
    only by what the cache does to the old tokens. With ``samples``, only that many blocks per
    ``segment`` are scored: each block is a forward over ``window + stride`` tokens, far too slow
    to do for every block on a CPU.
    """
    import torch
    import torch.nn.functional as F

    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    ids = encode_text(tokenizer, text, max_tokens).to(model_device(model))
    total = ids.numel()
    starts = recompute_blocks(total, stride=stride, segment=segment, samples=samples)
    result = StreamResult(label=label, positions=[], nll=[])
    started = time.perf_counter()
    with torch.inference_mode():
        for done, t in enumerate(starts, 1):
            end = min(t + stride, total)  # targets [t, end)
            first = max(0, t - 1 - window)
            inputs = ids[first : end - 1]
            tick = time.perf_counter()
            logits = model(input_ids=inputs[None], use_cache=False).logits[0]
            result.chunk_seconds.append((t, time.perf_counter() - tick))
            targets = ids[t:end]
            nll = F.cross_entropy(logits[t - 1 - first :].float(), targets, reduction="none")
            result.nll.extend(nll.tolist())
            result.positions.extend(range(t, end))
            result.max_cache_tokens = max(result.max_cache_tokens, inputs.numel())
            if progress is not None:
                progress(done, len(starts))
    result.seconds = time.perf_counter() - started
    return result

