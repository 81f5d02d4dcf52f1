"""The budget memories: which recent part of the history each strategy keeps, no model needed.

Each is one rule over the history (all, the last k turns, the newest that fit, the newest that
fit after a pinned head); the view itself is built by the context assembler
(:func:`contextwindow.window.assemble`), with the memory's ``cache_policy`` if it has one.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..trim import CachePolicy, pinned_count
from ..window import DEFAULT_KEEP_FIRST, Context
from .base import Memory, check_limits

__all__ = ["DEFAULT_KEEP_FIRST", "BufferMemory", "SinkWindowMemory", "TokenBufferMemory",
           "WindowMemory"]


class BufferMemory(Memory):
    """Everything, unbounded: the baseline."""

    def plan(self) -> Context:
        return self._keep_span(0, 0)


class WindowMemory(Memory):
    """The system prompt plus the last ``k`` turns (a turn: a user message and what follows it)."""

    def __init__(self, k: int, **options: Any) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, not {k}")
        self.k = k
        super().__init__(**options)

    def plan(self) -> Context:
        pinned = pinned_count(self._history, keep_system=self.keep_system)
        start = self._user_turns[-self.k] if len(self._user_turns) > self.k else pinned
        return self._keep_span(pinned, start)


class TokenBufferMemory(Memory):
    """The newest turns that fit in ``max_tokens``, after the system prompt and the first
    ``keep_first`` messages, which are always kept. Raises ``BudgetExceededError`` rather than
    going over budget. With ``cache_policy`` (:class:`~contextwindow.trim.CachePolicy`) the
    view keeps its start until the budget is reached, then cuts to the low-water mark, so that
    consecutive views share their prefix (prompt caching); a reloaded memory cuts the same."""

    max_tokens: int  # always set: this strategy's whole point is its budget

    def __init__(self, max_tokens: int, *, keep_first: int = 0,
                 cache_policy: CachePolicy | None = None, **options: Any) -> None:
        check_limits(max_tokens, keep_first)
        self.max_tokens = max_tokens
        self.keep_first = keep_first
        self.cache_policy = cache_policy
        super().__init__(**options)

    def plan(self) -> Context:
        pinned = pinned_count(self._history, keep_system=self.keep_system,
                              keep_first=self.keep_first)
        return self._assemble(self.max_tokens, self._overhead(), pinned)


class SinkWindowMemory(TokenBufferMemory):
    """A token buffer that pins the conversation's first messages (its "sinks"): the
    StreamingLLM idea at message level. Early turns that set up the task or say who the user
    is stay in context however long the chat runs."""

    def __init__(self, max_tokens: int, *, keep_first: int = DEFAULT_KEEP_FIRST,
                 **options: Any) -> None:
        super().__init__(max_tokens, keep_first=keep_first, **options)
