"""Fitting a conversation to a remote model's window, with counts only (no model at hand).

The local engine fits against its own chat template (:meth:`Generator.fit`); a gateway in front
of another server has only a :class:`~contextwindow.tokens.TokenCounter` for the upstream model:
tiktoken plus chat framing for OpenAI models (exact), or the model's own tokenizer and chat
template (``TokenCounter.from_hf``). The policies are the same: ``trim``, ``sinks``, ``none``;
and ``summary``: what trimming leaves out is replaced by a key-facts summary (names, numbers,
dates, codes and quotes, verbatim; :class:`~contextwindow.summarize.KeyFactsSummarizer`) in a
system message after the pinned head, capped at a quarter of the prompt budget. A session's
summary is extended with what was newly left out, not rewritten, each turn.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExceededError, ConfigError
from ..generation.engine import POLICIES, SINKS_KEEP_FIRST, LeftOut
from ..memory.folding import cut_summary
from ..messages import SYSTEM_ROLES, Message
from ..summarize.facts import KeyFactsSummarizer
from ..tokens import TokenCounter
from ..trim import pinned_count, trim

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
    2 by default for ``sinks``) or refuse it (``none``)."""

    counter: TokenCounter
    context: int
    policy: str = "trim"
    keep_first: int | None = None
    summarizer: Any = field(default_factory=KeyFactsSummarizer)
    # first left-out message id -> (last left-out id, summary): a session's summary grows
    _summaries: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict,
                                                          repr=False, compare=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in GATEWAY_POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; expected one of "
                              f"{', '.join(GATEWAY_POLICIES)}")
        if self.context < 16:
            raise ConfigError(f"the context window must be >= 16 tokens, not {self.context}")
        if self.keep_first is None:
            object.__setattr__(self, "keep_first",
                               SINKS_KEEP_FIRST if self.policy == "sinks" else 0)

    def fit(self, messages: Sequence[Message], max_tokens: int, *,
            counted: tuple[int, int] = (0, 0), tools: Sequence[Any] | None = None) -> Fitted:
        """The messages that fit ``context - max_tokens`` prompt tokens.

        ``counted`` is ``(n, tokens)`` when the first ``n`` messages are already known to cost
        ``tokens`` (a stored session), so a long history is not summed again on every turn.
        ``tools`` (the request's tool definitions) count against the budget too. Raises
        :class:`BudgetExceededError` as ``Generator.fit`` does.
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
            with_summary = self._summarized(messages, budget, tools)
            if with_summary is not None:
                return Fitted(with_summary, self.counter.count_messages(with_summary, tools),
                              original, len(messages), budget, max_tokens)
        kept = trim(messages, budget, self.counter, keep_first=self.keep_first or 0, tools=tools)
        return Fitted(kept, self.counter.count_messages(kept, tools), original, len(messages),
                      budget, max_tokens)

    def _summarized(self, messages: Sequence[Message], budget: int,
                    tools: Sequence[Any] | None) -> list[Message] | None:
        """Pinned head, a summary of what is left out, the newest turns; None if the newest
        turns need the summary's share too (then plain trimming applies)."""
        cap = max(1, int(budget * SUMMARY_SHARE))
        try:
            kept = trim(messages, budget - cap, self.counter, keep_first=self.keep_first or 0,
                        tools=tools)
        except BudgetExceededError:
            return None
        pinned = pinned_count(messages, keep_first=self.keep_first or 0)
        dropped = messages[pinned:len(messages) - (len(kept) - pinned)]
        if not dropped:
            return None
        text = cut_summary(self._summary_of(dropped), cap, self._summary_cost, self.summarizer)
        return [*kept[:pinned], Message(role="system", content=SUMMARY_PREFIX + text),
                *kept[pinned:]]

    def _summary_cost(self, text: str) -> int:
        return self.counter.count_message(Message(role="system", content=SUMMARY_PREFIX + text))

    def _summary_of(self, dropped: Sequence[Message]) -> str:
        """The summary of ``dropped``, extending the one made for a prefix of it, if any."""
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
        summary = self.summarizer.summarize(previous, todo) if todo else previous
        with self._guard:
            self._summaries[first] = (dropped[-1].id, summary)
            self._summaries.move_to_end(first)
            while len(self._summaries) > 1024:
                self._summaries.popitem(last=False)
        return summary
