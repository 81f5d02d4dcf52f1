"""Passkey retrieval: can the model read back a key hidden at a given depth of a long prompt?

A random 5-digit key sits at ``depth`` of a filler text of exactly ``length`` tokens; the answer
is greedy-decoded and scored exactly. Run under :func:`contextwindow.rope.rope_length`, so
length-dependent RoPE (dynamic NTK, LongRoPE) sees the frequencies one forward of the whole
prompt would, and prefilled in chunks on a KV cache (:mod:`.chunked`), so 16k tokens fit.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ModelError
from .chunked import (
    cached_forward,
    check_memory,
    head_logits,
    model_device,
    prefill,
    split_model,
    truncate_cache,
)
from .streaming import Progress

__all__ = [
    "FILLER",
    "INTRO",
    "KEY_SENTENCE",
    "QUESTION",
    "PasskeyPrompt",
    "PasskeyResult",
    "decode_number",
    "passkey_keys",
    "passkey_prompt",
    "passkey_retrieval",
    "score_passkey",
]

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
FILLER = (
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
KEY_SENTENCE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\nWhat is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    """A tokenized passkey prompt; ``input_ids[key_start:key_end]`` is the key sentence."""

    input_ids: tuple[int, ...]
    key: str
    key_start: int
    key_end: int
    filler_tokens: int  # filler tokens in total, before + after the key
    filler_before: int  # filler tokens before the key
    depth: float  # requested depth

    @property
    def actual_depth(self) -> float:
        """Fraction of the filler that precedes the key (the requested depth, to one token)."""
        return self.filler_before / self.filler_tokens if self.filler_tokens else 0.0


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def passkey_prompt(tokenizer: Any, length: int, depth: float, key: str) -> PasskeyPrompt:
    """Exactly ``length`` tokens: intro, filler, the key sentence after ``depth`` of the filler
    (0 = right after the intro, 1 = right before the question), more filler, the question."""
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"depth must be between 0 and 1, got {depth!r}")
    if not re.fullmatch(r"\d+", key):
        raise ConfigError(f"the pass key must be digits, got {key!r}")
    intro = _encode(tokenizer, INTRO)
    filler_unit = _encode(tokenizer, FILLER)
    key_ids = _encode(tokenizer, KEY_SENTENCE.format(key=key))
    question = _encode(tokenizer, QUESTION)
    n_filler = length - len(intro) - len(key_ids) - len(question)
    if n_filler < 0:
        raise ConfigError(
            f"a passkey prompt needs at least {length - n_filler} tokens; got length={length}"
        )
    reps = n_filler // len(filler_unit) + 1
    filler = (filler_unit * reps)[:n_filler]
    before = round(depth * n_filler)
    ids = intro + filler[:before] + key_ids + filler[before:] + question
    key_start = len(intro) + before
    return PasskeyPrompt(
        input_ids=tuple(ids),
        key=key,
        key_start=key_start,
        key_end=key_start + len(key_ids),
        filler_tokens=n_filler,
        filler_before=before,
        depth=depth,
    )


_DIGITS = re.compile(r"\d+")


def score_passkey(answer: str, key: str) -> bool:
    """Exact: the first run of digits in ``answer`` must be ``key`` (spaces between digits are
    ignored, since tokenizers often emit one digit per token)."""
    compact = re.sub(r"(?<=\d)\s+(?=\d)", "", answer)
    match = _DIGITS.search(compact)
    return match is not None and match.group(0) == key


def _answer_done(text: str) -> bool:
    compact = re.sub(r"(?<=\d)\s+(?=\d)", "", text.rstrip())
    match = _DIGITS.search(compact)
    if match is None:
        return False
    # the first digit run is finished when something non-digit follows it (a trailing space
    # may still be followed by more digits, so only a non-space character ends it)
    return match.end() < len(compact)


def decode_number(tokenizer: Any, logits: Any, step: Callable[[int], Any],
                  max_new_tokens: int) -> str:
    """Greedy decoding until the first number is complete, the end-of-sequence token, or
    ``max_new_tokens``: ``logits`` predict the first token, ``step(token)`` feeds one token and
    returns the logits of the next."""
    generated: list[int] = []
    text = ""
    for _ in range(max_new_tokens):
        token = int(logits.argmax())
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if token == tokenizer.eos_token_id or _answer_done(text):
            break
        logits = step(token)
    return text


@dataclass(frozen=True)
class PasskeyTrials:
    """``trials`` passkeys at one length and depth: the keys, the answers, how many were right.
    What every passkey result has (:class:`PasskeyResult`, the needle in a stream's)."""

    length: int
    depth: float
    trials: int
    correct: int
    keys: tuple[str, ...]
    answers: tuple[str, ...]

    @property
    def accuracy(self) -> float:
        return self.correct / self.trials if self.trials else 0.0


@dataclass(frozen=True)
class PasskeyResult(PasskeyTrials):
    """Accuracy of ``trials`` passkey retrievals at one length and depth."""

    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "depth": self.depth,
            "trials": self.trials,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "keys": list(self.keys),
            "answers": list(self.answers),
            "seed": self.seed,
        }


def passkey_keys(trials: int, seed: int = 0) -> list[str]:
    """The ``trials`` random 5-digit keys a seed gives."""
    rng = random.Random(seed)
    return [str(rng.randint(10000, 99999)) for _ in range(trials)]


def passkey_retrieval(
    model: Any,
    tokenizer: Any,
    length: int,
    depth: float = 0.5,
    trials: int = 10,
    *,
    seed: int = 0,
    max_new_tokens: int = 10,
    prefill_chunk: int = 2048,
    max_memory: int | None = None,
    progress: Progress | None = None,
) -> PasskeyResult:
    """Hide a random 5-digit key at ``depth`` of a ``length``-token filler prompt, greedy-decode
    the answer, and score it exactly; ``trials`` keys drawn from ``seed``.

    The trials share the tokens before the key, so that prefix is prefilled once into a KV cache,
    and each trial feeds only the key, the rest of the filler and the question on top of it (in
    ``prefill_chunk``-token chunks), then decodes greedily until the first number is complete.
    Length-dependent RoPE runs under ``rope_length(model, length)``: the same frequencies as one
    forward of the whole prompt, then decoding as ``model.generate`` would continue.
    """
    import torch

    from ..rope import rope_length

    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    if not isinstance(length, int) or length < 1:
        raise ConfigError(f"length must be a positive integer, got {length!r}")
    check_memory(model, length + max_new_tokens, prefill_chunk=prefill_chunk, max_memory=max_memory)
    try:
        from transformers import DynamicCache
    except ImportError as exc:  # pragma: no cover
        raise ModelError("passkey retrieval needs transformers") from exc

    decoder, head = split_model(model)
    # No config: every layer keeps all its tokens, so a cached prefix can be cropped back even
    # on sliding-window models (Gemma-3), whose mask still applies each layer's window.
    new_cache = DynamicCache
    keys = passkey_keys(trials, seed)
    answers: list[str] = []
    correct = 0
    caches: dict[tuple[int, ...], Any] = {}
    with torch.inference_mode():
        for done, key in enumerate(keys, 1):
            prompt = passkey_prompt(tokenizer, length, depth, key)
            with rope_length(model, len(prompt.input_ids)):
                cache, hidden = _prefill_prompt(decoder, prompt, caches, new_cache, prefill_chunk)
            step = functools.partial(_next_logits, model, decoder, head, cache)
            first = head_logits(model, head, hidden[0, -1])
            answers.append(decode_number(tokenizer, first, step, max_new_tokens))
            correct += score_passkey(answers[-1], key)
            if progress is not None:
                progress(done, trials)
    return PasskeyResult(length=length, depth=depth, trials=trials, correct=correct,
                         keys=tuple(keys), answers=tuple(answers), seed=seed)


def _prefill_prompt(decoder: Any, prompt: PasskeyPrompt, caches: dict[tuple[int, ...], Any],
                    new_cache: Callable[[], Any], prefill_chunk: int) -> tuple[Any, Any]:
    """Prefill ``prompt`` into a KV cache; the cache and the last hidden state.

    ``caches`` holds the cache of the previous trial under the tokens before its key: a prompt
    with the same tokens before its key cuts that cache back to them and feeds only the rest.
    """
    import torch

    device = model_device(decoder)
    prefix = prompt.input_ids[: prompt.key_start]
    cache = caches.get(prefix)
    if cache is None:
        caches.clear()
        cache = new_cache()
        if prefix:
            prefill(decoder, torch.tensor([prefix], device=device), cache, prefill_chunk)
        caches[prefix] = cache
    else:
        truncate_cache(cache, len(prefix))
    rest = torch.tensor([prompt.input_ids[prompt.key_start :]], device=device)
    return cache, prefill(decoder, rest, cache, prefill_chunk)


def _next_logits(model: Any, decoder: Any, head: Any, cache: Any, token: int) -> Any:
    """Feed one decoded token on top of ``cache``; the logits that predict the next."""
    import torch

    hidden = cached_forward(decoder, torch.tensor([[token]], device=model_device(model)), cache)
    return head_logits(model, head, hidden[0, -1])
