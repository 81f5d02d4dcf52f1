"""Judge a model past its trained length: perplexity by position, and passkey retrieval.

Both are memory-aware: the decoder body runs once (or in chunks through a KV cache) and the
full-vocabulary ``lm_head`` is applied to a few hundred positions at a time, so a 16k-token
evaluation never holds 16k x vocab logits. :func:`estimate_memory` says up front what a length
needs; a length that does not fit raises :class:`~contextwindow.errors.ResourceError`.

Length-dependent RoPE (dynamic NTK, LongRoPE) is evaluated under
:func:`contextwindow.rope.rope_length`, so chunked prefill computes what one forward of the whole
sequence computes.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ModelError, ResourceError
from ..models.hf import encode_prefix, forward
from .streaming import Progress

__all__ = [
    "PasskeyPrompt",
    "PasskeyResult",
    "PositionPerplexity",
    "available_memory",
    "check_memory",
    "estimate_memory",
    "passkey_prompt",
    "passkey_retrieval",
    "perplexity_by_position",
    "score_passkey",
]

# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes of RAM available to a new allocation (psutil, else /proc/meminfo, else total)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is usually present
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))  # pragma: no cover


def _efficient_attention(model: Any) -> bool:
    return getattr(model.config, "_attn_implementation", "eager") in ("sdpa", "flash_attention_2")


def estimate_memory(
    model: Any, length: int, *, chunk: int = 512, prefill_chunk: int | None = None
) -> int:
    """Bytes of working memory (beyond the weights) an evaluation of ``length`` tokens needs.

    Counts the KV cache, the activations of one decoder layer over the longest chunk fed at once
    (``prefill_chunk`` or the whole length), the attention scores when the attention
    implementation materialises them (eager), and ``chunk`` positions of full-vocabulary logits,
    with a 1.5x margin. Deliberately rough: it answers "will this fit", not "how much exactly".
    """
    cfg = model.config
    itemsize = next(model.parameters()).element_size()
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    layers = cfg.num_hidden_layers
    vocab = cfg.vocab_size
    q = min(length, prefill_chunk or length)  # queries processed at once
    kv_cache = 2 * layers * kv_heads * head_dim * length * itemsize
    activations = q * (8 * hidden + 3 * inter + 2 * (heads + 2 * kv_heads) * head_dim) * itemsize
    rope_tables = 4 * q * head_dim * 4
    # a boolean mask is built for chunks on top of a cache; a single causal forward with SDPA
    # skips it
    mask = 0 if (q == length and _efficient_attention(model)) else q * length
    if _efficient_attention(model):
        attention = 2 * heads * q * head_dim * itemsize
    else:
        attention = 2 * heads * q * length * itemsize
    logits = 3 * min(chunk, length) * vocab * 4
    hidden_out = length * hidden * itemsize
    total = kv_cache + activations + rope_tables + mask + attention + logits + hidden_out
    return int(total * 1.5)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(model: Any, length: int, *, max_memory: int | None = None, **kwargs: Any) -> int:
    """:func:`estimate_memory`, raising ``ResourceError`` if it exceeds ``max_memory`` (default:
    the RAM available now). Returns the estimate."""
    need = estimate_memory(model, length, **kwargs)
    limit = available_memory() if max_memory is None else int(max_memory)
    if need > limit:
        raise ResourceError(
            f"evaluating {length} tokens needs about {_gib(need)} of memory beyond the model "
            f"weights, but only {_gib(limit)} is available; use a shorter length (or a machine "
            "with more RAM)"
        )
    return need


# ---------------------------------------------------------------------------------------------
# Model plumbing
# ---------------------------------------------------------------------------------------------


def _parts(model: Any) -> tuple[Any, Any]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise ModelError(f"{type(model).__name__} does not expose a decoder body and an lm_head")
    return decoder, head


def _logits(model: Any, head: Any, hidden: Any) -> Any:
    logits = head(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        import torch

        logits = torch.tanh(logits / cap) * cap
    return logits


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _cached_forward(decoder: Any, ids: Any, cache: Any) -> Any:
    """One decoder forward on top of ``cache``; the hidden states (the head is applied later)."""
    return forward(decoder, ids, cache).last_hidden_state


def _prefill(decoder: Any, ids: Any, cache: Any, prefill_chunk: int | None) -> Any:
    """Feed ``ids`` (1, n) through the decoder on top of ``cache``; return the last hidden state."""
    n = ids.shape[1]
    step = prefill_chunk or n
    hidden = None
    for start in range(0, n, step):
        hidden = _cached_forward(decoder, ids[:, start : start + step], cache)[:, -1:]
    return hidden


def _truncate_cache(cache: Any, length: int) -> None:
    """Drop everything after the first ``length`` positions of a KV cache."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # a negative value removes that many tokens (all transformers versions)


# ---------------------------------------------------------------------------------------------
# Perplexity by position
# ---------------------------------------------------------------------------------------------


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
    import torch

    if not isinstance(length, int) or length < 2:
        raise ConfigError(f"length must be an integer >= 2, got {length!r}")
    if not isinstance(bucket, int) or bucket < 1:
        raise ConfigError(f"bucket must be a positive integer, got {bucket!r}")
    check_memory(model, length, chunk=chunk, max_memory=max_memory)
    from ..rope import rope_length

    decoder, head = _parts(model)
    ids = torch.tensor([_text_ids(tokenizer, text, length)], device=_device(model))
    nll = torch.empty(length - 1, dtype=torch.float64)
    with torch.inference_mode(), rope_length(model, length):
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
        total = length - 1
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            logits = _logits(model, head, hidden[0, start:stop])
            targets = ids[0, start + 1 : stop + 1]
            nll[start:stop] = torch.nn.functional.cross_entropy(
                logits, targets, reduction="none"
            ).double()
            del logits
            if progress is not None:
                progress(stop, total)
    # nll[i] is the loss of predicting the token at position i + 1
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
    return PositionPerplexity(
        length=length,
        bucket=bucket,
        starts=tuple(starts),
        tokens=tuple(counts),
        nll=tuple(means),
        ppl=tuple(ppls),
        overall_ppl=math.exp(float(nll.mean())),
    )


# ---------------------------------------------------------------------------------------------
# Passkey retrieval
# ---------------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class PasskeyResult:
    """Accuracy of ``trials`` passkey retrievals at one length and depth."""

    length: int
    depth: float
    trials: int
    correct: int
    keys: tuple[str, ...]
    answers: tuple[str, ...]
    seed: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.trials if self.trials else 0.0

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

    decoder, head = _parts(model)
    device = _device(model)
    keys = passkey_keys(trials, seed)
    prompts = [passkey_prompt(tokenizer, length, depth, k) for k in keys]
    answers: list[str] = []
    correct = 0
    prefix_cache: dict[tuple[int, ...], Any] = {}
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            prefix = prompt.input_ids[: prompt.key_start]
            with rope_length(model, len(prompt.input_ids)):
                cache = prefix_cache.get(prefix)
                if cache is None:
                    prefix_cache.clear()
                    cache = DynamicCache(config=model.config)
                    if prefix:
                        _prefill(decoder, torch.tensor([prefix], device=device), cache,
                                 prefill_chunk)
                    prefix_cache[prefix] = cache
                else:
                    _truncate_cache(cache, len(prefix))
                rest = torch.tensor([prompt.input_ids[prompt.key_start :]], device=device)
                hidden = _prefill(decoder, rest, cache, prefill_chunk)
            generated: list[int] = []
            text = ""
            for _ in range(max_new_tokens):
                token = int(_logits(model, head, hidden[0, -1]).argmax())
                generated.append(token)
                text = tokenizer.decode(generated, skip_special_tokens=True)
                if token == tokenizer.eos_token_id or _answer_done(text):
                    break
                hidden = _cached_forward(decoder, torch.tensor([[token]], device=device), cache)
            answers.append(text)
            correct += score_passkey(text, prompt.key)
            if progress is not None:
                progress(i + 1, trials)
    return PasskeyResult(
        length=length,
        depth=depth,
        trials=trials,
        correct=correct,
        keys=tuple(keys),
        answers=tuple(answers),
        seed=seed,
    )
