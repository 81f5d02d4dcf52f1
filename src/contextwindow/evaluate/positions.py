"""Judge a model past its trained length by its perplexity at each position; passkey retrieval,
the other judge, is :mod:`.passkey`.

Both are memory-aware (:mod:`.chunked`): the decoder body runs once (or in chunks through a KV
cache) and the full-vocabulary ``lm_head`` is applied to a few hundred positions at a time, so a
16k-token evaluation never holds 16k x vocab logits. :func:`~.chunked.estimate_memory` says up
front what a length needs; a length that does not fit raises
:class:`~contextwindow.errors.ResourceError`.

Length-dependent RoPE (dynamic NTK, LongRoPE) is evaluated under
:func:`contextwindow.rope.rope_length`, so chunked prefill computes what one forward of the whole
sequence computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..models.hf import encode_prefix
from .chunked import check_memory, head_logits, model_device, split_model
from .streaming import Progress

__all__ = ["PositionPerplexity", "next_token_nll", "perplexity_by_position"]

@dataclass(frozen=True)
class PositionPerplexity:
    """Perplexity of each ``bucket``-token slice of a ``length``-token text.

    Bucket ``k`` covers the predictions of tokens at positions ``[k * bucket, (k + 1) * bucket)``
    (position 0 has no prediction, so the first bucket counts one token fewer).
    """

    length: int
    bucket: int
    starts: tuple[int, ...]
    tokens: tuple[int, ...]
    nll: tuple[float, ...]  # mean negative log-likelihood per bucket (nats)
    ppl: tuple[float, ...]
    overall_ppl: float

    @classmethod
    def from_losses(cls, nll: Any, length: int, bucket: int) -> PositionPerplexity:
        """Bucket the per-token losses: ``nll[i]`` is the loss of predicting position ``i + 1``
        (a 1-D tensor of ``length - 1`` values)."""
        starts, counts, means, ppls = [], [], [], []
        for b0 in range(0, length, bucket):
            lo, hi = max(b0, 1) - 1, min(b0 + bucket, length) - 1
            if hi <= lo:
                continue
            values = nll[lo:hi]
            mean = float(values.mean())
            starts.append(b0)
            counts.append(int(values.numel()))
            means.append(mean)
            ppls.append(math.exp(mean))
        return cls(
            length=length,
            bucket=bucket,
            starts=tuple(starts),
            tokens=tuple(counts),
            nll=tuple(means),
            ppl=tuple(ppls),
            overall_ppl=math.exp(float(nll.mean())),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "bucket": self.bucket,
            "starts": list(self.starts),
            "tokens": list(self.tokens),
            "nll": list(self.nll),
            "ppl": list(self.ppl),
            "overall_ppl": self.overall_ppl,
        }


def _text_ids(tokenizer: Any, text: str, length: int) -> list[int]:
    ids = encode_prefix(tokenizer, text, length)
    if len(ids) < length:
        raise ConfigError(f"the text has only {len(ids)} tokens; {length} are needed")
    return ids


def perplexity_by_position(
    model: Any,
    tokenizer: Any,
    text: str,
    length: int,
    bucket: int = 2048,
    *,
    chunk: int = 512,
    max_memory: int | None = None,
    progress: Progress | None = None,
) -> PositionPerplexity:
    """Perplexity of the first ``length`` tokens of ``text``, per ``bucket`` positions.

    One forward of the decoder body over all ``length`` tokens (no KV cache), then ``lm_head`` and
    cross-entropy on ``chunk`` positions at a time, so full-vocabulary logits exist for at most
    ``chunk`` positions. ``progress(done, total)`` is called after each logits chunk.
    """
    if not isinstance(length, int) or length < 2:
        raise ConfigError(f"length must be an integer >= 2, got {length!r}")
    if not isinstance(bucket, int) or bucket < 1:
        raise ConfigError(f"bucket must be a positive integer, got {bucket!r}")
    check_memory(model, length, chunk=chunk, max_memory=max_memory)
    ids = _text_ids(tokenizer, text, length)
    nll = next_token_nll(model, ids, chunk=chunk, progress=progress)
    return PositionPerplexity.from_losses(nll, length, bucket)


def next_token_nll(
    model: Any, ids: list[int], *, chunk: int = 512, progress: Progress | None = None
) -> Any:
    """The loss of every next token of ``ids`` (float64, ``len(ids) - 1`` values): one forward
    of the decoder body, then ``lm_head`` on ``chunk`` positions at a time; what another engine's
    per-position log-likelihood is compared with."""
    import torch

    from ..rope import rope_length

    decoder, head = split_model(model)
    length = len(ids)
    tensor = torch.tensor([ids], device=model_device(model))
    nll = torch.empty(length - 1, dtype=torch.float64)
    with torch.inference_mode(), rope_length(model, length):
        hidden = decoder(input_ids=tensor, use_cache=False).last_hidden_state
        total = length - 1
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            logits = head_logits(model, head, hidden[0, start:stop])
            targets = tensor[0, start + 1 : stop + 1]
            nll[start:stop] = torch.nn.functional.cross_entropy(
                logits, targets, reduction="none"
            ).double()
            del logits
            if progress is not None:
                progress(stop, total)
    return nll
