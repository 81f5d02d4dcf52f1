"""The generation engine behind ``contextwindow chat`` and ``contextwindow serve``.

:class:`Engine` is what every engine shares: the fit below, and the lock. A :class:`Generator`
(the transformers engine) owns one local causal LM and does two things; the llama.cpp engine
(:mod:`.llamacpp`) fits the same way and decodes in llama.cpp:

* :meth:`Generator.fit` turns a conversation into a prompt that fits the model's window. The
  window (``context`` tokens) is shared by the prompt and the reply: the prompt gets
  ``context - reserve`` tokens, where ``reserve`` is the reply's ``max_tokens``. The policy says
  what happens to a conversation that is too long: ``"trim"`` keeps the system prompt and the
  recent turns that fit (:func:`contextwindow.trim.trim`, cut by the cache-aware
  :class:`~contextwindow.trim.CachePolicy` unless ``cache_policy=None``), ``"sinks"`` also pins the
  conversation's first messages (like :class:`~contextwindow.memory.SinkWindowMemory`), and
  ``"none"`` refuses with :class:`~contextwindow.errors.BudgetExceededError`. Counts come from
  the model's own chat template, so the budget is exact.
* :meth:`Generator.generate` prefills the prompt and decodes token by token, streaming text
  through a callback, with temperature / top-p sampling from a per-request seeded RNG (the same
  request with the same seed gives the same text), stop strings and EOS. The KV cache is an
  attention-sink cache (:class:`contextwindow.kv.SinkCache`) of ``context`` tokens, so a reply
  longer than the window keeps going at constant memory: the first ``sinks`` tokens and the most
  recent ones stay, the middle is evicted. With the sink cache the reply reserve is capped at
  half the window (a long ``max_tokens`` does not starve the prompt); without it (dense cache)
  prompt plus reply must fit the window. The forward passes and the decode loop are in
  :mod:`._run`.

Prefix reuse (:mod:`.prefix`): the keys and values of each recent request's prompt + reply are
kept (``prefix_cache_mb``, least recently used out first), and a prompt whose token ids start
with a kept prefix prefills only the rest; :attr:`Completion.cached_tokens` says how many were
reused.

One model, one request at a time: both methods hold the generator's lock, so concurrent
callers are serialised and never share a cache. Batch size is 1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..adapters import as_messages
from ..content import check_text_only
from ..errors import BudgetExceededError, ConfigError, InvalidMessageError
from ..messages import Message, check_conversation
from ..summarize.base import BaseSummarizer
from ..summarize.local import TransformersSummarizer
from ..summarize.prompt import clean_summary
from ..templates import chat_template_ids
from ..tokens import TokenCounter
from ..trim import CachePolicy
from ..window import DEFAULT_KEEP_FIRST, OVERFLOW_MODES, Fitter, LeftOut
from ._run import Completion, Run, decode
from .prefix import PrefixCache
from .sampling import SamplingParams

#: The overflow modes of the local engine (the text side's, less ``summary`` and ``recall``,
#: which the gateway and the memories do).
POLICIES = tuple(mode for mode in OVERFLOW_MODES if mode not in ("summary", "recall"))
#: ``keep_first`` used by the ``"sinks"`` policy unless given (as SinkWindowMemory).
SINKS_KEEP_FIRST = DEFAULT_KEEP_FIRST


@dataclass(frozen=True)
class FitResult(LeftOut):
    """A conversation fitted to the window: what the model will read, and what was left out."""

    messages: list[Message]  # the messages the prompt is built from (after trimming)
    prompt_ids: list[int]  # the templated prompt, generation prompt included
    original_tokens: int  # prompt tokens the whole conversation would have taken
    original_messages: int
    budget: int  # prompt tokens allowed (context - reserve)
    reserve: int  # tokens set aside for the reply

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def _render(message: Message) -> dict[str, Any]:
    """The dict a chat template sees (templates concatenate content, so never ``None``)."""
    return {**message.to_openai(), "content": message.content or ""}


def _as_system(message: Message) -> Message:
    """Local chat templates know "system", not OpenAI's newer "developer" role."""
    if message.role != "developer":
        return message
    return Message(role="system", content=message.content, name=message.name, id=message.id)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a reply: the model's generation config's and the tokenizer's."""
    eos: set[int] = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None)):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, Iterable):
            eos.update(int(t) for t in source)
    return frozenset(eos)


class Engine:
    """What ``chat`` and ``serve`` need of an engine, whichever decodes: the fit (ours, the same
    on every engine) and a ``generate`` the engine supplies.

    The fit turns a conversation into the prompt ids the engine will read, counted with the
    model's own chat template (``tokenizer``), within ``context - reserve_for(max_tokens)``.
    Both :meth:`fit` and a subclass's ``generate`` hold :attr:`lock`, so one request at a time
    reaches the model.

    Args:
        tokenizer: the model's tokenizer, with a chat template.
        model_id: the name it is served under.
        context: the window in tokens (prompt + reply).
        policy: ``"trim"``, ``"sinks"`` or ``"none"`` (see the module docstring).
        keep_first: messages after the system prompt that are never trimmed
            (default 0, or 2 with ``"sinks"``).
        cache_policy: how ``"trim"`` / ``"sinks"`` cut a long conversation: the cache-aware
            :class:`~contextwindow.trim.CachePolicy` (consecutive requests of one conversation
            share their prefix, for prefix caches; docs/caching.md), or None for the newest
            turns that fit.
        sink_cache: whether the engine decodes on an attention-sink cache, which lets a reply
            outgrow the window (:meth:`reserve_for`).
    """

    #: The engine's name, as ``--engine`` spells it.
    engine: ClassVar[str]

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_id: str,
        context: int,
        policy: str = "trim",
        keep_first: int | None = None,
        cache_policy: CachePolicy | None = CachePolicy(),  # noqa: B008 (frozen: safe to share)
        sink_cache: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
        if isinstance(context, bool) or not isinstance(context, int) or context < 16:
            raise ConfigError(f"context must be an integer >= 16, not {context!r}")
        if keep_first is None:
            keep_first = SINKS_KEEP_FIRST if policy == "sinks" else 0
        if keep_first < 0:
            raise ConfigError(f"keep_first must be >= 0, not {keep_first}")
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context = context
        self.policy = policy
        self.keep_first = keep_first
        self.cache_policy = cache_policy
        self.sink_cache = sink_cache
        self.counter = TokenCounter.from_hf(tokenizer)
        self.window = Fitter(self.counter, context, mode=policy, keep_first=keep_first,
                             cache_policy=cache_policy)
        self.lock = threading.RLock()

    # -- fitting ------------------------------------------------------------------------------
    def reserve_for(self, max_tokens: int) -> int:
        """Tokens of the window set aside for a reply of up to ``max_tokens``."""
        if self.sink_cache:
            return min(max_tokens, self.context // 2)
        if max_tokens >= self.context:
            raise BudgetExceededError(
                f"max_tokens ({max_tokens}) must be smaller than the context window "
                f"({self.context} tokens) without the sink cache",
                budget=self.context, required=max_tokens, pinned=0)
        return max_tokens

    def prepare(self, messages: Iterable[Any]) -> list[Message]:
        """Validate and normalise a conversation (OpenAI dicts, Messages or LangChain messages)."""
        converted = as_messages(messages)
        check_conversation(converted)  # tool results answer their calls, as providers require
        check_text_only(converted)  # images and audio cannot reach a text-only model
        converted = [_as_system(m) for m in converted]
        if not converted:
            raise InvalidMessageError("a conversation needs at least one message")
        return converted

    def _template_ids(self, messages: Sequence[Message]) -> list[int]:
        return chat_template_ids(self.tokenizer, [_render(m) for m in messages])

    def fit(self, messages: Iterable[Any], max_tokens: int) -> FitResult:
        """The prompt for ``messages`` within ``context - reserve_for(max_tokens)`` tokens.

        The fit itself is the text side's (:class:`~contextwindow.window.Fitter`, counting with
        this model's template); the templated prompt is then counted again, and for a template
        that is not additive the budget shrinks until the prompt fits. Raises
        :class:`BudgetExceededError` when the policy is ``"none"`` and the conversation is too
        long, or when not even the newest user turn fits.
        """
        with self.lock:
            conversation = self.prepare(messages)
            reserve = self.reserve_for(max_tokens)
            fitted = self.window.fit(conversation, reserve)
            ids = self._template_ids(fitted.messages)
            budget = target = fitted.budget
            while len(ids) > budget:
                if self.policy == "none":
                    raise BudgetExceededError(
                        f"This model's maximum context length is {self.context} tokens; the "
                        f"messages take {len(ids)} and the completion {reserve}.",
                        budget=budget, required=len(ids), pinned=0)
                target -= len(ids) - budget
                if target < 1:
                    raise BudgetExceededError(
                        f"the prompt does not fit in {budget} tokens", budget=budget,
                        required=len(ids), pinned=0)
                fitted = self.window.fit(conversation, reserve, budget=target)
                ids = self._template_ids(fitted.messages)
            return FitResult(messages=fitted.messages, prompt_ids=ids,
                             original_tokens=fitted.original_tokens,
                             original_messages=fitted.original_messages, budget=budget,
                             reserve=reserve)

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self,
        fit: FitResult,
        params: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Decode a reply to a fitted prompt, calling ``on_text`` with each new piece of text
        (the engine's own; this base class has none)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate")

    def chat(
        self,
        messages: Iterable[Any],
        params: SamplingParams | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[FitResult, Completion]:
        """Fit and generate in one call (holding the lock across both)."""
        params = params or SamplingParams()
        with self.lock:
            fit = self.fit(messages, params.max_tokens)
            return fit, self.generate(fit, params, on_text=on_text)

    def summarizer(self) -> BaseSummarizer:
        """A summarizer writing with this engine's model (``chat --overflow summary``)."""
        return EngineSummarizer(self)


class EngineSummarizer(TransformersSummarizer):
    """:class:`~contextwindow.summarize.TransformersSummarizer`'s prompts and chunking, each
    chunk answered greedily by an :class:`Engine` (fit and generate), so an engine without a
    transformers model (llama.cpp) summarizes with the model it already has loaded."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        super().__init__(engine, engine.tokenizer, **options)

    def _generate(self, model: Any, tokenizer: Any, previous: str | None,
                  lines: Sequence[str]) -> str:
        params = SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        return clean_summary(model.chat(self._chat(previous, lines), params)[1].text)


class Generator(Engine):
    """A local transformers model plus the policy that keeps its prompts inside the window.

    Args:
        model, tokenizer: a transformers causal LM (RoPE, for the sink cache) and its tokenizer,
            which needs a chat template.
        model_id, policy, keep_first, cache_policy: as :class:`Engine` (default cache policy:
            the cache-aware one).
        context: the window in tokens (prompt + reply); defaults to the model's
            ``max_position_embeddings`` (after any RoPE scaling).
        sink_cache: decode with the attention-sink cache (bounded memory) instead of a dense one.
        sinks: tokens the sink cache never evicts.
        prefill_chunk: prompt tokens per forward pass during prefill (bounds activation memory).
        prefix_cache_mb: MiB of keys and values kept from recent requests for prefix reuse
            (0 turns it off); with the sink cache, only requests that evicted nothing are kept.
    """

    engine = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str = "local",
        context: int | None = None,
        policy: str = "trim",
        keep_first: int | None = None,
        cache_policy: CachePolicy | None = CachePolicy(),  # noqa: B008 (frozen: safe to share)
        sink_cache: bool = True,
        sinks: int = 4,
        prefill_chunk: int = 2048,
        prefix_cache_mb: float = 512,
    ) -> None:
        if context is None:
            context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        super().__init__(tokenizer, model_id=model_id, context=context, policy=policy,
                         keep_first=keep_first, cache_policy=cache_policy,
                         sink_cache=sink_cache)
        if sinks < 0 or sinks >= self.context // 2:
            raise ConfigError(f"sinks must be in [0, {self.context // 2}), not {sinks}")
        if prefill_chunk < 1:
            raise ConfigError(f"prefill_chunk must be >= 1, not {prefill_chunk}")
        if not isinstance(prefix_cache_mb, (int, float)) or not 0 <= prefix_cache_mb < 2**40:
            raise ConfigError(f"prefix_cache_mb must be a number >= 0, not {prefix_cache_mb!r}")
        self.model = model
        self.sinks = sinks
        self.prefill_chunk = prefill_chunk
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20))
        self.eos_ids = _eos_ids(model, tokenizer)
        if sink_cache:  # fail at start-up, not on the first request, if the model has no RoPE
            from ..models.rotary import rotary_embedding

            rotary_embedding(model)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        rope: str | None = None,
        rope_factor: float | None = None,
        model_id: str | None = None,
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ) -> Generator:
        """Load a local model (a registered name or a directory; default SmolLM2-135M-Instruct)
        on ``device`` in ``dtype`` (see :func:`~contextwindow.models.load_model`), optionally
        RoPE-scale it."""
        from ..models import DEFAULT_MODEL, load_model, resolve

        loaded, tokenizer = load_model(model, device=device, dtype=dtype)
        from ..rope import RESTORE_METHODS, scale_rope

        if rope and rope not in RESTORE_METHODS:
            scale_rope(loaded, rope, rope_factor)
        if model_id is None:
            model_id = DEFAULT_MODEL if model in (None, DEFAULT_MODEL) else resolve(model).name
        return cls(loaded, tokenizer, model_id=model_id, **options)

    def summarizer(self) -> BaseSummarizer:
        """A summarizer on this model: transformers' ``generate``, greedy."""
        return TransformersSummarizer(self.model, self.tokenizer)

    # -- generation ---------------------------------------------------------------------------
    def new_cache(self) -> Any:
        """A fresh KV cache for one request: sinks + window = ``context`` tokens, or dense."""
        if self.sink_cache:
            from ..kv import SinkCache

            return SinkCache(self.model, sinks=self.sinks, window=self.context - self.sinks)
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def generate(
        self,
        fit: FitResult,
        params: SamplingParams,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Decode a reply to a fitted prompt, calling ``on_text`` with each new piece of text."""
        import torch

        with self.lock, torch.inference_mode():
            run = self.prefill(fit.prompt_ids, cancel)
            if run.logits is None:
                return Completion("", "cancelled", seconds=time.perf_counter() - run.started)
            completion = decode(run, params, tokenizer=self.tokenizer, eos_ids=self.eos_ids,
                                on_text=on_text, cancel=cancel)
            self.prefix_cache.store(run.ids, run.cache)
            return completion

    def prefill(self, prompt_ids: Sequence[int],
                cancel: threading.Event | None = None) -> Run:
        """A new run with ``prompt_ids`` in its cache: the longest prefix kept in the prefix
        cache is copied (``run.cached`` tokens), the rest is fed in chunks. ``run.logits`` are
        those after the last prompt token, or None if ``cancel`` was set first."""
        import torch

        with self.lock, torch.inference_mode():
            run = Run(self.model, self.new_cache(), started=time.perf_counter())
            run.cached = self.prefix_cache.restore(prompt_ids, run.cache)
            run.ids = list(prompt_ids[:run.cached])
            prompt = torch.tensor([list(prompt_ids)], dtype=torch.long)
            for start in range(run.cached, prompt.shape[-1], self.prefill_chunk):
                if cancel is not None and cancel.is_set():
                    run.logits = None
                    break
                run.step(prompt[:, start:start + self.prefill_chunk])
            return run
