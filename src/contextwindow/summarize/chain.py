"""The summary of what a window leaves out, for fits that hold no stored summary (the gateway).

A memory stores its summary; a server fitting each request from the messages alone derives it.
With a cache-aware cut (:class:`~contextwindow.trim.CachePolicy`) what the cut leaves out is
summarized one *segment* at a time, a segment being what one jump of the cut leaves out: the
summary after jump ``k`` is ``summarize(summary after jump k-1, segment k)``
(:meth:`SummaryChain.fold`). So the summary changes only when the cut moves, and it depends on
the history alone (given a deterministic summarizer): a restarted replica, or one that never
saw the session, derives the same text. Summaries are cached by their inputs (the previous
text and the segment's messages, by content), so a turn asks the summarizer only about a
segment it has not summarized yet. With the newest-first window, :meth:`SummaryChain.extend`
extends the summary made for a prefix of what is left out.

If the summarizer fails or runs out of time (``timeout``: seconds for all of one request's
summaries), that request gets the last summary that succeeded followed by the key facts of
everything left out after it (:class:`~contextwindow.summarize.KeyFactsSummarizer`): nothing
is lost and the request is answered; the next request that needs the segment asks again.

A :class:`SummaryChain` is the :class:`~contextwindow.window.SummarySource` of
:class:`~contextwindow.window.Fitter`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import ConfigError, SummarizerError
from ..messages import Message
from ..window import BoundedCache, Replay
from .base import cut_summary, run_summarizer
from .facts import KeyFactsSummarizer

__all__ = ["SummaryChain"]

log = logging.getLogger("contextwindow.summarize")


class SummaryChain:
    """Summaries of left-out segments by ``summarizer`` (module docstring); ``facts`` writes
    the fallback and shortens a fallback text to its cap (oldest facts first); ``failures``
    counts the requests that fell back."""

    def __init__(self, summarizer: Any | None = None, *, timeout: float | None = None,
                 size: int = 1024) -> None:
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"summary_timeout must be positive, not {timeout}")
        self.facts = KeyFactsSummarizer()
        self.summarizer = summarizer if summarizer is not None else self.facts
        self.timeout = timeout
        self.failures = 0  # requests that fell back to key facts
        self._done: BoundedCache[tuple[str | None, tuple[Message, ...]], str] = (
            BoundedCache(size))
        # newest-first only: first left-out message id -> (last left-out id, summary)
        self._prefixes: BoundedCache[str, tuple[str, str]] = BoundedCache(size)
        self._guard = threading.Lock()

    @property
    def may_block(self) -> bool:
        """Whether a summary may wait on a model (anything but key facts does)."""
        return not isinstance(self.summarizer, KeyFactsSummarizer)

    def fold(self, messages: Sequence[Message], pinned: int, state: Replay,
             stable: Replay) -> tuple[str, bool, Replay]:
        """The summary of ``messages[pinned:state.jumps[-1]]``, whether it is the fallback, and
        ``stable`` with as many of its segments folded in as this call summarized."""
        deadline = self.deadline()
        folded, text, kept = state.folded, state.text, stable
        while folded < len(state.jumps):
            begin = state.jumps[folded - 1] if folded else pinned
            try:
                text = self.step(text, messages[begin:state.jumps[folded]], deadline)
            except SummarizerError as exc:
                return self.fallback(text, messages[begin:state.jumps[-1]], exc), True, kept
            folded += 1
            if folded <= len(stable.jumps):
                kept = replace(stable, folded=folded, text=text)
        return text or "", False, kept

    def extend(self, dropped: Sequence[Message]) -> tuple[str, bool]:
        """The summary of ``dropped``, extending the one made for a prefix of it, if any; and
        whether it is the fallback (then it is not kept)."""
        first = dropped[0].id
        known = self._prefixes.get(first)
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
            summary = self.step(previous, todo, self.deadline())
        except SummarizerError as exc:
            return self.fallback(previous, todo, exc), True
        self._prefixes.put(first, (dropped[-1].id, summary))
        return summary, False

    def fit(self, text: str, limit: int, cost: Callable[[str], int], fell_back: bool) -> str:
        """``text`` cut to ``limit`` tokens by the summarizer that wrote it."""
        return cut_summary(text, limit, cost, self.facts if fell_back else self.summarizer)

    def deadline(self) -> float | None:
        """When one request's summaries must be done (None: no limit)."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    def fallback(self, text: str | None, left_out: Sequence[Message],
                 error: SummarizerError) -> str:
        """``text`` (the last summary that succeeded, if any), then the key facts of
        ``left_out`` (what it does not cover): what a request gets when the summarizer failed."""
        with self._guard:
            self.failures += 1
        log.warning("%s; this request gets the key facts of what was left out", error)
        facts = self.facts.summarize(None, left_out)
        return f"{text}\n\n{facts}" if text else facts

    def step(self, previous: str | None, segment: Sequence[Message],
             deadline: float | None) -> str:
        """``summarize(previous, segment)``, from the cache when it was asked before; a
        :class:`SummarizerError` if it fails or ``deadline`` passes."""
        key = (previous, tuple(segment))
        text = self._done.get(key)
        if text is not None:
            return text
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SummarizerError(f"the summaries took longer than {self.timeout:g} s")
        text = run_summarizer(self.summarizer, previous, key[1], timeout=timeout)
        self._done.put(key, text)
        return text
