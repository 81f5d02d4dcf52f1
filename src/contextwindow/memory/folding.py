"""What one summarization folds (:class:`Fold`) and how a summary is cut to its token cap.

Pure functions of their arguments, kept apart from the memories so that the rules can be read
(and tested) without a store or a summarizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..messages import Summary

__all__ = ["Fold", "cut_summary"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fold:
    """One summarization: the new summary covers history ``[pinned, end)``; the summarizer
    gets the previous summary plus ``history[start:end]``, the turns after what the previous
    summary covered."""

    pinned: int
    start: int
    end: int

    def select(self, history: Sequence[T]) -> list[T]:
        """The messages to summarize."""
        return list(history[self.start:self.end])

    def summary(self, text: str) -> Summary:
        """The new summary, with ``text`` covering ``[pinned, end)``."""
        return Summary(text, self.pinned, self.end)


def cut_summary(text: str, limit: int, cost: Callable[[str], int], summarizer: Any) -> str:
    """``text`` cut so that ``cost(text) <= limit``.

    A summarizer with ``fit_summary(text, fits)`` (KeyFacts, Combined) shortens it first: the
    oldest fact lines go, the newest stay. Whatever still does not fit is cut to its longest
    fitting prefix, cut back to the end of a line (if that keeps at least half) or of a word,
    so no fact is left half-written.
    """
    if cost(text) <= limit:
        return text
    fit_summary = getattr(summarizer, "fit_summary", None)  # an optional summarizer method
    if callable(fit_summary):
        shorter = fit_summary(text, lambda candidate: cost(candidate) <= limit)
        if isinstance(shorter, str):
            text = shorter.strip()
            if cost(text) <= limit:
                return text
    lo, hi = 0, len(text)  # cost(text[:lo]) <= limit holds throughout
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if lo < len(text) and text[lo] != "\n":  # inside a line: end at a line if it costs
        line_end = cut.rfind("\n")           # at most half, else at a word boundary
        if line_end >= len(cut) // 2:
            cut = cut[:line_end]
        elif cut and not cut[-1].isspace() and not text[lo].isspace():
            boundary = max(cut.rfind(" "), line_end)
            if boundary > 0:
                cut = cut[:boundary]
    cut = cut.rstrip()
    while cut and cost(cut) > limit:  # token counts are not always monotone in length
        cut = cut[:-1].rstrip()
    return cut
