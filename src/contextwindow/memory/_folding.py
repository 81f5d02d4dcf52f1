"""What one summarization folds (:class:`Fold`).

A pure value, kept apart from the memories so that the rule can be read (and tested) without a
store or a summarizer. How a summary is cut to its token cap is
:func:`contextwindow.summarize.cut_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..messages import Summary

__all__ = ["Fold"]

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
