"""Fitting a conversation to a remote model's window, with counts only (no model at hand).

The local engine fits against its own chat template (:meth:`Generator.fit`); a gateway in front
of another server has only a :class:`~contextwindow.tokens.TokenCounter` for the upstream model:
tiktoken plus chat framing for OpenAI models (exact), or the model's own tokenizer and chat
template (``TokenCounter.from_hf``). The policies are the same: ``trim``, ``sinks``, ``none``;
and ``summary``: what trimming leaves out is replaced by a summary in a system message after
the pinned head, capped at a quarter of the prompt budget. The summary is key facts by default
(names, numbers, dates, codes and quotes, verbatim; :class:`~contextwindow.summarize.
KeyFactsSummarizer`), or any summarizer, e.g. the upstream model itself
(:class:`~contextwindow.summarize.OpenAISummarizer`); when that one fails or times out, the
request gets key facts instead (:mod:`.cuts`).

The cut is cache-aware by default, as in the local engine (``cache_policy=CachePolicy()``):
the window keeps its start and only grows until it no longer fits, then jumps back to 60% of
the budget, so consecutive prompts of a conversation share their prefix and the upstream's
prompt cache hits (docs/caching.md). The start is a function of the history; a stored
session's replay is continued turn by turn (:class:`.cuts.Cuts`). Under ``summary`` the
summary changes only when the cut moves, so it does not break the prefix either.
``cache_policy=None`` keeps the newest turns that fit (a session's summary is then extended
with what each turn newly leaves out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExceededError, ConfigError, SummarizerError
from ..generation.engine import POLICIES, SINKS_KEEP_FIRST, LeftOut
from ..memory.folding import cut_summary
from ..messages import SYSTEM_ROLES, Message, check_conversation
from ..summarize.facts import KeyFactsSummarizer
from ..tokens import TokenCounter
from ..trim import CachePolicy, TrimPlan, pinned_count, plan_trim, trim
from .cuts import Cuts, Replayed, SummaryChain, Window

GATEWAY_POLICIES = (*POLICIES, "summary")
SUMMARY_SHARE = 0.25
"""The most of the prompt budget a summary may take."""
SUMMARY_PREFIX = "Summary of the earlier conversation (older messages were left out):\n"


@dataclass(frozen=True)
class Fitted(LeftOut):
    """What is sent upstream, and what the policy left out (the fields of ``FitResult``)."""

    messages: list[Message]
    prompt_tokens: int
    original_tokens: int
    original_messages: int
    budget: int
    reserve: int


@dataclass(frozen=True)
class WindowPolicy:
    """A window of ``context`` tokens shared by prompt and reply, and what to do when the
    conversation is longer: trim it (``keep_first`` messages after the system prompt pinned;
    2 by default for ``sinks``), summarize what is cut (``summary``, with ``summarizer``; its
    calls get ``summary_timeout`` seconds per request in all) or refuse it (``none``).
    ``cache_policy`` says where the cut falls (module docstring)."""

    counter: TokenCounter
    context: int
    policy: str = "trim"
    keep_first: int | None = None
    summarizer: Any = field(default_factory=KeyFactsSummarizer)
    cache_policy: CachePolicy | None = field(default_factory=CachePolicy)
    summary_timeout: float | None = None
    # newest-first only: first left-out message id -> (last left-out id, summary)
    _summaries: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict,
                                                          repr=False, compare=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _cuts: Cuts | None = field(default=None, init=False, repr=False, compare=False)
    _chain: SummaryChain = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in GATEWAY_POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; expected one of "
                              f"{', '.join(GATEWAY_POLICIES)}")
        if self.context < 16:
            raise ConfigError(f"the context window must be >= 16 tokens, not {self.context}")
        if self.summary_timeout is not None and self.summary_timeout <= 0:
            raise ConfigError(f"summary_timeout must be positive, not {self.summary_timeout}")
        if self.keep_first is None:
            object.__setattr__(self, "keep_first",
                               SINKS_KEEP_FIRST if self.policy == "sinks" else 0)
        if self.cache_policy is not None:
            object.__setattr__(self, "_cuts", Cuts(self.cache_policy))
        object.__setattr__(self, "_chain", SummaryChain(self.summarizer,
                                                        timeout=self.summary_timeout))

    @property
    def may_block(self) -> bool:
        """Whether :meth:`fit` may wait on a model (a summary written by one), so a server
        must call it in a worker thread, never on its event loop."""
        return self.policy == "summary" and not isinstance(self.summarizer, KeyFactsSummarizer)

    def fit(self, messages: Sequence[Message], max_tokens: int, *,
            counted: tuple[int, int] = (0, 0), tools: Sequence[Any] | None = None) -> Fitted:
        """The messages that fit ``context - max_tokens`` prompt tokens.

        ``counted`` is ``(n, tokens)`` when the first ``n`` messages are a stored session's
        history (ids given by the store, never changed) known to cost ``tokens``, so a long
        history is not summed, nor replayed, again on every turn. ``tools`` (the request's
        tool definitions) count against the budget too. Raises :class:`BudgetExceededError`
        as ``Generator.fit`` does.
        """
        if max_tokens >= self.context:
            raise BudgetExceededError(
                f"max_tokens ({max_tokens}) must be smaller than the context window "
                f"({self.context} tokens)", budget=self.context, required=max_tokens, pinned=0)
        budget = self.context - max_tokens
        known, known_tokens = counted
        has_system = bool(messages) and messages[0].role in SYSTEM_ROLES
        original = (known_tokens + sum(map(self.counter.count_message, messages[known:]))
                    + self.counter.overhead(tools, has_system=has_system))
        if self.policy == "none" or original <= budget:
            if original > budget:
                raise BudgetExceededError(
                    f"This model's maximum context length is {self.context} tokens. However, "
                    f"you requested {original + max_tokens} tokens ({original} in the messages, "
                    f"{max_tokens} for the completion). Please reduce the length of the "
                    "messages or completion.", budget=budget, required=original, pinned=0)
            return Fitted(list(messages), original, original, len(messages), budget, max_tokens)
        if self.policy == "summary":
            with_summary = self._summarized(messages, budget, tools, known)
            if with_summary is not None:
                return Fitted(with_summary, self.counter.count_messages(with_summary, tools),
                              original, len(messages), budget, max_tokens)
        if self._cuts is None:
            kept = trim(messages, budget, self.counter, keep_first=self.keep_first or 0,
                        tools=tools)
        else:
            kept = self._cut(self._cuts, messages, budget, tools, known)[0].select(messages)
        return Fitted(kept, self.counter.count_messages(kept, tools), original, len(messages),
                      budget, max_tokens)

    def _cut(self, cuts: Cuts, messages: Sequence[Message], limit: int,
             tools: Sequence[Any] | None, known: int, *,
             track: bool = False) -> tuple[TrimPlan, Window, Replayed, Replayed]:
        """The cache-aware plan for ``limit`` prompt tokens (the rules of :func:`trim`), with
        the replay inputs and its states after the stored history and after all messages."""
        counter = self.counter

        def cost(index: int) -> int:
            return counter.count_message(messages[index])

        pinned = pinned_count(messages, keep_first=self.keep_first or 0)
        has_system = bool(messages) and messages[0].role in SYSTEM_ROLES
        overhead = counter.overhead(tools, has_system=has_system)
        fixed = overhead + sum(cost(i) for i in range(pinned))
        if fixed > limit:  # not even the pinned head fits: the plan says by how much
            plan_trim(messages, cost, limit, overhead, pinned=pinned)
        window = Window(messages, cost, limit, fixed, pinned, min(known, len(messages)))
        stable, full = cuts.replay(window, track=track)
        plan = plan_trim(messages, cost, limit, overhead, pinned=pinned,
                         cache_policy=self.cache_policy, since=full.cut)
        kept = plan.select(range(len(messages)))
        check_conversation([messages[k] for k in kept], kept)
        return plan, window, stable, full

    def _summarized(self, messages: Sequence[Message], budget: int,
                    tools: Sequence[Any] | None, known: int) -> list[Message] | None:
        """Pinned head, a summary of what is left out, the newest turns; None if the newest
        turns need the summary's share too (then plain trimming applies)."""
        cap = max(1, int(budget * SUMMARY_SHARE))
        try:
            found = (self._newest_summary(messages, budget - cap, tools) if self._cuts is None
                     else self._cached_summary(self._cuts, messages, budget - cap, tools, known))
        except BudgetExceededError:
            return None
        if found is None:
            return None
        kept, pinned, text, fell_back = found
        text = cut_summary(text, cap, self._summary_cost,
                           self._chain.facts if fell_back else self.summarizer)
        return [*kept[:pinned], Message(role="system", content=SUMMARY_PREFIX + text),
                *kept[pinned:]]

    def _cached_summary(self, cuts: Cuts, messages: Sequence[Message], limit: int,
                        tools: Sequence[Any] | None, known: int
                        ) -> tuple[list[Message], int, str, bool] | None:
        """The cache-aware window for ``limit`` tokens and the summary of what its cut left
        out (kept, pinned, text, whether it is the fallback); None if nothing is left out."""
        plan, window, stable, full = self._cut(cuts, messages, limit, tools, known, track=True)
        if not plan.dropped:
            return None
        text, fell_back, done = self._chain.fold(messages, plan.pinned, full, stable)
        cuts.remember(window, done, track=True)
        return plan.select(messages), plan.pinned, text, fell_back

    def _newest_summary(self, messages: Sequence[Message], limit: int,
                        tools: Sequence[Any] | None
                        ) -> tuple[list[Message], int, str, bool] | None:
        """As :meth:`_cached_summary`, for the newest turns that fit."""
        kept = trim(messages, limit, self.counter, keep_first=self.keep_first or 0, tools=tools)
        pinned = pinned_count(messages, keep_first=self.keep_first or 0)
        dropped = messages[pinned:len(messages) - (len(kept) - pinned)]
        if not dropped:
            return None
        return kept, pinned, *self._summary_of(dropped)

    def _summary_cost(self, text: str) -> int:
        return self.counter.count_message(Message(role="system", content=SUMMARY_PREFIX + text))

    def _summary_of(self, dropped: Sequence[Message]) -> tuple[str, bool]:
        """Newest-first only: the summary of ``dropped``, extending the one made for a prefix
        of it, if any; and whether it is the fallback (then it is not kept)."""
        first = dropped[0].id
        with self._guard:
            known = self._summaries.get(first)
        previous, todo = None, dropped
        if known is not None:
            last, text = known
            for index in range(len(dropped) - 1, -1, -1):  # the previous end is near the end
                if dropped[index].id == last:
                    previous, todo = text, dropped[index + 1:]
                    break
        if not todo:
            return previous or "", False
        try:
            summary = self._chain.step(previous, todo, self._chain.deadline())
        except SummarizerError as exc:
            return self._chain.fallback(previous, todo, exc), True
        with self._guard:
            self._summaries[first] = (dropped[-1].id, summary)
            self._summaries.move_to_end(first)
            while len(self._summaries) > 1024:
                self._summaries.popitem(last=False)
        return summary, False
