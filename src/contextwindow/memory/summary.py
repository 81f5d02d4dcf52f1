"""The summary memories: older turns folded into a running summary that counts against the
budget. They differ only in when they fold and how far (:meth:`_fold_end`)."""

from __future__ import annotations

from typing import Any

from ..errors import BudgetExceededError, ConfigError
from ..summarize.base import Summarizer
from ..trim import plan_trim
from ._summarizing import SummarizingMemory
from .base import check_limits

__all__ = ["SummaryBufferMemory", "SummaryMemory"]


class SummaryBufferMemory(SummarizingMemory):
    """Recent turns verbatim plus a running summary of older ones, within ``max_tokens``.

    When an add would make the view (pinned head + summary + recent turns + overhead) exceed
    ``max_tokens``, the oldest whole units after the summary are folded into it: the summarizer
    gets the previous summary and those messages and returns the new summary. Enough is folded
    that the view, with the summary at its ``max_summary_tokens`` cap, drops to ``low_water`` x
    ``max_tokens``, so the next summarization is many adds away. The summary message counts
    against the budget; a longer summary is cut to ``max_summary_tokens`` (token-exact).

    The system prompt and the first ``keep_first`` messages are always kept verbatim. Raw
    messages stay in the store; the summary is stored with the range it covers, so reopening
    the session restores the same view. ``timeout`` bounds a summarizer call; on failure
    (``on_error="raise"``, the default) the add raises :class:`SummarizerError` and changes
    nothing; with ``on_error="trim"`` it warns (:class:`SummarizerWarning`), sets
    :attr:`last_error`, and the view trims the oldest unsummarized turns instead
    (:attr:`degraded`) until a later summary succeeds; with ``cache_policy``
    (:class:`~contextwindow.trim.CachePolicy`) that trimming cuts in the same rhythm as folds.

    Between two folds the view only grows at its end (the summary message changes only at a
    fold), so it already suits prompt caches: ``low_water`` sets how far apart folds are.
    """

    max_tokens: int

    def __init__(self, max_tokens: int, summarizer: Summarizer, *,
                 max_summary_tokens: int | None = None, keep_first: int = 0,
                 low_water: float = 0.6, timeout: float | None = None, on_error: str = "raise",
                 **options: Any) -> None:
        if not 0 < low_water <= 1:
            raise ConfigError(f"low_water must be in (0, 1], not {low_water}")
        check_limits(max_tokens)
        self.low_water = low_water
        super().__init__(summarizer, max_tokens=max_tokens,
                         max_summary_tokens=(max_tokens // 4 if max_summary_tokens is None
                                             else max_summary_tokens),
                         keep_first=keep_first, timeout=timeout, on_error=on_error, **options)

    def _fold_end(self, pinned: int, base: int) -> int | None:
        if self._untrimmed_tokens(pinned, base) <= self.max_tokens:
            return None  # fits: no summarization
        n = len(self._history)
        # The kept window with the summary at its cap, first down to the low-water mark.
        reserve = self._first_overhead(pinned, n, True) + self.max_summary_tokens
        for target in (int(self.max_tokens * self.low_water), self.max_tokens):
            try:
                window = plan_trim(self._history, self._cost, target, reserve, pinned=pinned)
            except BudgetExceededError:
                continue
            return window.start
        # Not even the newest user turn fits beside a full-size summary: fold everything before
        # it (a shorter summary may still make it fit; if not, messages() raises
        # BudgetExceededError as TokenBufferMemory does).
        return next((k for k in range(n - 1, base - 1, -1) if self._history[k].role == "user"),
                    None)


class SummaryMemory(SummarizingMemory):
    """A running summary of everything before the newest turn, plus that turn verbatim.

    Each new user message folds the previous turn(s) into the summary (one summarizer call per
    turn: use :class:`SummaryBufferMemory` to summarize only when a budget requires it). The
    system prompt and the first ``keep_first`` messages stay verbatim. ``max_tokens`` is
    optional: with it, the view never exceeds it (a newest turn too big to fit raises
    :class:`BudgetExceededError`). Failure handling is as in :class:`SummaryBufferMemory`.
    """

    def __init__(self, summarizer: Summarizer, *, max_summary_tokens: int = 256,
                 keep_first: int = 0, max_tokens: int | None = None,
                 timeout: float | None = None, on_error: str = "raise", **options: Any) -> None:
        super().__init__(summarizer, max_tokens=max_tokens, max_summary_tokens=max_summary_tokens,
                         keep_first=keep_first, timeout=timeout, on_error=on_error, **options)

    def _fold_end(self, pinned: int, base: int) -> int | None:
        if self._history[-1].role != "user":
            return None
        return len(self._history) - 1  # everything before the new user message
