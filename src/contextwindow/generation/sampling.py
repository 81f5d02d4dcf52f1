"""How one reply is decoded: the token sampler, driven by the validated sampling settings.

:class:`SamplingParams` (the settings and their checks) lives on the text side
(:mod:`contextwindow.sampling`), so a server validates a request without the model side; it is
importable from here too.
"""

from __future__ import annotations

from typing import Any

from ..sampling import MAX_STOP_STRINGS, SamplingParams

__all__ = ["MAX_STOP_STRINGS", "SamplingParams", "sample"]


def sample(logits: Any, params: SamplingParams, rng: Any) -> int:
    """The next token from 1-D ``logits``: greedy at temperature 0, else temperature / top-p
    sampling drawn from the ``torch.Generator`` ``rng``."""
    import torch

    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        outside = torch.cumsum(probs, dim=-1) - probs > params.top_p
        ordered = ordered.masked_fill(outside, float("-inf"))
        pick = torch.multinomial(torch.softmax(ordered, dim=-1), 1, generator=rng)
        return int(order[pick])
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=rng))
