"""Needle in a stream: does a bounded KV cache keep the one fact that matters?

Streaming perplexity says whether a bounded cache keeps the model fluent; it cannot tell a cache
that keeps the important tokens from one that keeps the recent ones. A passkey hidden at a given
depth of a long prompt can: the *whole* prompt (intro, filler, key, filler, question) is streamed
through the cache in ``chunk``-token forwards, as a long document would be, and only then is the
answer decoded greedily through the same cache. Whatever the cache evicted before the question
arrived is gone, so a sinks + window cache smaller than the distance from the key to the end finds
0 keys by construction, and an attention-scored policy finds the key only if it kept it.

:func:`budget_sweep` runs this and streaming perplexity for every policy and KV budget, with the
full cache (``"full"``) as the ceiling; :func:`contextwindow.evaluate.report.plot_budget_sweep`
draws it.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from .passkey import (
    PasskeyPrompt,
    PasskeyTrials,
    decode_number,
    passkey_keys,
    passkey_prompt,
    score_passkey,
)
from .streaming import streaming_perplexity

__all__ = ["BudgetSweep", "NeedleResult", "budget_sweep", "needle_in_a_stream"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CacheBudget:
    """A KV eviction policy and its budget in tokens (``None`` for the full cache)."""

    policy: str
    budget: int | None


@dataclass(frozen=True)
class NeedleResult(PasskeyTrials, CacheBudget):
    """``trials`` passkeys at one depth of a ``length``-token prompt, streamed through a policy's
    cache of ``budget`` tokens (``None`` for the full cache).

    The bases are listed in this order because a dataclass takes the last base's fields first:
    policy, budget, then :class:`~contextwindow.evaluate.passkey.PasskeyTrials`', then these,
    the key order of the JSON written from ``dataclasses.asdict`` (``evict-sweep --json``).
    """

    max_cache_tokens: int
    seconds: float


def _stream(model: Any, ids: Sequence[int], cache: Any, chunk: int) -> Any:
    """Feed ``ids`` through ``cache`` in ``chunk``-token forwards; the last position's logits."""
    import torch

    from ..models.hf import forward

    logits = None
    for start in range(0, len(ids), chunk):
        piece = torch.tensor([ids[start : start + chunk]], device=model.device)
        logits = forward(model, piece, cache, logits_to_keep=1).logits[0, -1]
    return logits


def _answer(model: Any, tokenizer: Any, logits: Any, cache: Any, max_new_tokens: int) -> str:
    """Greedy decoding through ``cache`` until the first number is complete."""
    import torch

    from ..models.hf import forward

    def step(token: int) -> Any:
        ids = torch.tensor([[token]], device=model.device)
        return forward(model, ids, cache, logits_to_keep=1).logits[0, -1]

    return decode_number(tokenizer, logits, step, max_new_tokens)


def needle_in_a_stream(
    model: Any,
    tokenizer: Any,
    *,
    policy: str = "sinks",
    budget: int | None = 1024,
    sinks: int = 4,
    positions: str = "slots",
    length: int = 4096,
    depth: float = 0.5,
    trials: int = 3,
    seed: int = 0,
    chunk: int = 256,
    max_new_tokens: int = 10,
    progress: Progress | None = None,
) -> NeedleResult:
    """Stream ``trials`` passkey prompts through fresh ``policy`` caches; score the answers.

    The prompt is :func:`~contextwindow.evaluate.passkey.passkey_prompt` (key at ``depth`` of
    the filler, the question last). Chunks start at multiples of ``chunk`` from the first token;
    the chunks before the key are the same in every trial, so they are streamed once and the
    cache is copied (a bounded cache is small). ``policy`` is a
    :data:`~contextwindow.kv.EVICTION_POLICIES` name or ``"full"``.
    """
    import torch

    from ..kv import make_cache

    if not isinstance(trials, int) or trials < 1 or chunk < 1:
        raise ConfigError(f"trials and chunk must be positive integers, got {trials}, {chunk}")
    keys = passkey_keys(trials, seed)
    new_cache = functools.partial(make_cache, model, policy, budget, sinks=sinks,
                                  positions=positions)
    prefixes: dict[tuple[int, ...], Any] = {}
    answers: list[str] = []
    peak = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for done, key in enumerate(keys, 1):
            prompt = passkey_prompt(tokenizer, length, depth, key)
            answer, held = _trial(model, tokenizer, prompt, prefixes, new_cache, chunk=chunk,
                                  max_new_tokens=max_new_tokens)
            answers.append(answer)
            peak = max(peak, held)
            if progress is not None:
                progress(done, trials)
    return NeedleResult(
        policy=policy, budget=budget if policy != "full" else None, length=length, depth=depth,
        trials=trials, correct=sum(map(score_passkey, answers, keys)), keys=tuple(keys),
        answers=tuple(answers), max_cache_tokens=peak, seconds=time.perf_counter() - started,
    )


def _trial(model: Any, tokenizer: Any, prompt: PasskeyPrompt,
           prefixes: dict[tuple[int, ...], Any], new_cache: Callable[[], Any], *, chunk: int,
           max_new_tokens: int) -> tuple[str, int]:
    """Stream one passkey prompt through a fresh cache and answer it; the answer, and the tokens
    the cache held when the question ended.

    ``prefixes`` holds the cache after the previous prompt's chunks before its key: a prompt with
    the same chunks streams only the rest, onto a copy of it.
    """
    ids = prompt.input_ids
    split = prompt.key_start // chunk * chunk
    prefix = prefixes.get(ids[:split])
    if prefix is None:
        prefixes.clear()
        prefix = prefixes[ids[:split]] = new_cache()
        _stream(model, ids[:split], prefix, chunk)
    cache = copy.deepcopy(prefix)
    logits = _stream(model, ids[split:], cache, chunk)
    held = cache.get_seq_length()
    return _answer(model, tokenizer, logits, cache, max_new_tokens), held


@dataclass(frozen=True)
class BudgetSweep:
    """Passkey accuracy and streaming perplexity per policy and KV budget.

    ``needles`` holds one :class:`NeedleResult` per (policy, budget, length, depth);
    ``perplexity`` maps ``(policy, budget)`` to the streaming perplexity over ``ppl_tokens``
    tokens (empty when no text was given). The full cache appears with budget ``None``.
    """

    needles: tuple[NeedleResult, ...]
    perplexity: dict[tuple[str, int | None], float]
    ppl_tokens: int

    def accuracy(self, policy: str, budget: int | None) -> float:
        """Keys found over all lengths and depths of one policy at one budget."""
        runs = [n for n in self.needles if n.policy == policy and n.budget == budget]
        trials = sum(n.trials for n in runs)
        return sum(n.correct for n in runs) / trials if trials else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "needles": [asdict(n) | {"accuracy": n.accuracy} for n in self.needles],
            "perplexity": [
                {"policy": p, "budget": b, "ppl": v} for (p, b), v in self.perplexity.items()
            ],
            "ppl_tokens": self.ppl_tokens,
        }


def budget_sweep(
    model: Any,
    tokenizer: Any,
    *,
    policies: Sequence[str] = ("sinks", "h2o", "tova", "snapkv"),
    budgets: Sequence[int] = (128, 256, 512, 1024, 2048),
    lengths: Sequence[int] = (4096,),
    depths: Sequence[float] = (0.5,),
    trials: int = 3,
    text: str | Sequence[int] | None = None,
    ppl_tokens: int = 4096,
    sinks: int = 4,
    positions: str = "slots",
    chunk: int = 256,
    ppl_chunk: int = 64,
    full: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BudgetSweep:
    """Every policy at every budget: needle in a stream at each length and depth, and (given
    ``text``) streaming perplexity over its first ``ppl_tokens`` tokens; ``full=True`` adds the
    full cache once as the ceiling. ``progress(label)`` is called after each finished run."""
    from ..kv import make_cache

    runs: list[tuple[str, int | None]] = [("full", None)] if full else []
    runs += [(p, b) for p in policies for b in budgets]
    needles: list[NeedleResult] = []
    perplexity: dict[tuple[str, int | None], float] = {}
    for policy, budget in runs:
        for length in lengths:
            for depth in depths:
                needles.append(
                    needle_in_a_stream(
                        model, tokenizer, policy=policy, budget=budget, sinks=sinks,
                        positions=positions, length=length, depth=depth, trials=trials, chunk=chunk,
                    )
                )
                if progress is not None:
                    progress(f"{policy} {budget} passkey {length}@{depth}")
        if text is not None:
            cache = make_cache(model, policy, budget, sinks=sinks, positions=positions)
            result = streaming_perplexity(
                model, tokenizer, text, cache=cache, chunk=ppl_chunk, max_tokens=ppl_tokens
            )
            perplexity[(policy, budget)] = result.ppl
            if progress is not None:
                progress(f"{policy} {budget} perplexity")
    return BudgetSweep(needles=tuple(needles), perplexity=perplexity, ppl_tokens=ppl_tokens)
