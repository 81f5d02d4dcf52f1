"""One request on the local model: its forward passes on its own KV cache, and the decode loop.

Kept apart from :mod:`.engine`, which decides *what* the model reads (the window, the policy,
the prefix cache); this module only feeds ids and samples tokens until EOS, a stop string,
``max_tokens`` or a cancel, streaming text as it goes. That loop (:func:`stream`) reads tokens
from any engine: the llama.cpp engine (:mod:`.llamacpp`) runs it on llama.cpp's tokens.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..models.hf import forward
from .decoding import IncrementalDecoder, StopMatcher
from .sampling import SamplingParams, sample


@dataclass
class Completion:
    """One generated reply and what it cost."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length" or "cancelled"
    token_ids: list[int] = field(default_factory=list)
    kv_cache_tokens: int = 0  # the most tokens the KV cache held at once
    kv_cache_bytes: int = 0  # ... and the most bytes
    kv_evicted_tokens: int = 0  # tokens the sink cache evicted (0 with a dense cache)
    cached_tokens: int = 0  # prompt tokens whose keys and values came from the prefix cache
    time_to_first_token: float = 0.0  # seconds from the start of the prefill
    seconds: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Run:
    """One request's forward passes on its own cache: the ids in it (``cached`` of them reused
    from the prefix cache), the most it held, and the logits after the last id fed."""

    model: Any
    cache: Any
    started: float
    ids: list[int] = field(default_factory=list)
    cached: int = 0
    peak_tokens: int = 0
    peak_bytes: int = 0
    logits: Any = None

    @property
    def fed(self) -> int:
        return len(self.ids)

    def step(self, ids: Any) -> Any:
        """Feed ``ids`` (1, n) on the model's device; the logits after the last of them, on the
        CPU, where the request's seeded generator samples (the same tokens on any device)."""
        from ..kv import cache_nbytes
        from ..models import model_device

        out = forward(self.model, ids.to(model_device(self.model)), self.cache, logits_to_keep=1)
        self.ids.extend(ids[0].tolist())
        self.peak_tokens = max(self.peak_tokens, self.cache.get_seq_length())
        self.peak_bytes = max(self.peak_bytes, cache_nbytes(self.cache))
        self.logits = out.logits[0, -1].float().cpu()
        return self.logits


def decode(run: Run, params: SamplingParams, *, tokenizer: Any, eos_ids: frozenset[int],
           on_text: Callable[[str], None] | None = None,
           cancel: threading.Event | None = None) -> Completion:
    """Sample tokens after the prefill (``run.logits``) until EOS, a stop string,
    ``max_tokens`` or cancel (:func:`stream`), calling ``on_text`` with each new piece of text."""
    completion = stream(_sampled(run, params), params, tokenizer=tokenizer, eos_ids=eos_ids,
                        started=run.started, on_text=on_text, cancel=cancel)
    return replace(completion, kv_cache_tokens=run.peak_tokens, kv_cache_bytes=run.peak_bytes,
                   kv_evicted_tokens=max(0, run.fed - run.cache.get_seq_length()),
                   cached_tokens=run.cached)


def _sampled(run: Run, params: SamplingParams) -> Iterator[int]:
    """The reply's tokens, each sampled from the logits the one before it gave; the model
    steps only when the next token is asked for."""
    import torch

    seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(63)
    rng = torch.Generator().manual_seed(seed)
    logits = run.logits
    while True:
        token = sample(logits, params, rng)
        yield token
        logits = run.step(torch.tensor([[token]], dtype=torch.long))


def stream(tokens: Iterator[int], params: SamplingParams, *, tokenizer: Any,
           eos_ids: Container[int], started: float,
           on_text: Callable[[str], None] | None = None,
           cancel: threading.Event | None = None) -> Completion:
    """Read a reply from ``tokens`` (any engine's, computed lazily: asking for the next one is
    what runs the model) until EOS, a stop string, ``max_tokens`` or cancel, calling
    ``on_text`` with each new piece of text. The one decode loop of every engine, so stop
    strings, streaming and finish reasons are the same whichever computes the tokens."""
    decoder, stopper = IncrementalDecoder(tokenizer), StopMatcher(params.stop)
    emit = on_text or (lambda text: None)
    ids: list[int] = []
    first_token_at = 0.0
    finish = "length"
    for token in tokens:
        ids.append(token)
        if len(ids) == 1:
            first_token_at = time.perf_counter() - started
        if token in eos_ids:
            finish = "stop"
            break
        if text := stopper.feed(decoder.push(token)):
            emit(text)
        if stopper.stopped:
            finish = "stop"
            break
        if len(ids) >= params.max_tokens:
            break
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
    if not stopper.stopped:
        for text in (stopper.feed(decoder.flush()), stopper.finish()):
            if text:
                emit(text)
    return Completion(text=stopper.text, finish_reason=finish, token_ids=ids,
                      time_to_first_token=first_token_at,
                      seconds=time.perf_counter() - started)
