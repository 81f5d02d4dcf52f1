"""The machinery summary memories share: a stored running summary, the view around it, and an
add that folds old turns into the summary atomically (sync or async).

The view is ``history[:pinned] + [summary] + history[start:]``. Only the model-free side of
:mod:`contextwindow.summarize` is imported here, never a backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from ..adapters import as_message
from ..errors import ConfigError, StoreError, SummarizerError
from ..messages import SYSTEM_ROLES, Message, Summary
from ..stores.aio import acall
from ..summarize.base import (
    Summarizer,
    SummarizerWarning,
    arun_summarizer,
    cut_summary,
    run_summarizer,
)
from ..trim import CachePolicy, pinned_count
from ..window import Context
from ._folding import Fold
from .base import Memory, MemoryStatus, check_limits, default_counter

__all__ = ["SummarizingMemory"]

_ON_ERROR = ("raise", "trim")


class SummarizingMemory(Memory):
    """Shared base of :class:`SummaryMemory` and :class:`SummaryBufferMemory`.

    The stored summary covers history ``[pinned, end)``; the view's ``start`` is ``end`` unless
    the view had to be trimmed because a summarizer failed with ``on_error="trim"`` (then
    :attr:`degraded` is true until the next successful summary, which folds the trimmed
    messages too). Subclasses say when to fold and how far (:meth:`_fold_end`).
    """

    def __init__(self, summarizer: Summarizer, *, max_tokens: int | None, max_summary_tokens: int,
                 keep_first: int = 0, timeout: float | None = None, on_error: str = "raise",
                 cache_policy: CachePolicy | None = None, **options: Any) -> None:
        if not callable(getattr(summarizer, "summarize", None)):
            raise ConfigError(f"{type(summarizer).__name__} has no summarize(previous, messages) "
                              "method")
        check_limits(max_tokens, keep_first)
        if on_error not in _ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(_ON_ERROR)}, not {on_error!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout}")
        counter = options.get("counter") or default_counter()
        floor = counter.count_message(Summary("x", 0, 0).as_message())
        if max_summary_tokens < floor:
            raise ConfigError(f"max_summary_tokens must be >= {floor} (the summary message's "
                              f"framing plus one token), not {max_summary_tokens}")
        if max_tokens is not None and max_summary_tokens >= max_tokens:
            raise ConfigError(f"max_summary_tokens ({max_summary_tokens}) must be smaller than "
                              f"max_tokens ({max_tokens})")
        self.summarizer = summarizer
        self.max_tokens = max_tokens
        self.max_summary_tokens = max_summary_tokens
        self.keep_first = keep_first
        self.timeout = timeout
        self.on_error = on_error
        self.cache_policy = cache_policy
        self.summarizations = 0  # successful summarizer calls by this object
        self.failures = 0  # failed or timed-out summarizer calls by this object
        self.last_error: SummarizerError | None = None
        super().__init__(**options)

    # -- state ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read messages and the summary from the store."""
        super().reload()
        summary = self.store.load_summary(self.session)
        if summary is not None:
            pinned = self._pinned()
            if not 0 <= summary.start <= summary.end <= len(self._history):
                raise StoreError(
                    f"the stored summary covers messages [{summary.start}, {summary.end}) but "
                    f"session {self.session!r} has {len(self._history)} messages")
            if summary.start != pinned:
                raise ConfigError(
                    f"the stored summary starts after message {summary.start} but this memory "
                    f"pins {pinned} (keep_system/keep_first differ from when it was written)")
        self._set_summary(summary)

    def _set_summary(self, summary: Summary | None) -> None:
        self._summary = summary
        if summary is None:
            self._summary_message: Message | None = None
            self._summary_cost = 0
            return
        # A summary written under a larger max_summary_tokens is cut for the view, not rewritten.
        text = self._fit_text(summary.text)
        self._summary_message = Summary(text, summary.start, summary.end).as_message()
        self._summary_cost = self.counter.count_message(self._summary_message)

    @property
    def summary(self) -> Summary | None:
        """The stored summary (text and the history range ``[start, end)`` it covers)."""
        return self._summary

    @property
    def degraded(self) -> bool:
        """True while the view leaves out messages that no summary covers (after a summarizer
        failure with ``on_error="trim"``)."""
        return self.plan().start > self._base(self._pinned())

    def status(self) -> MemoryStatus:
        status = super().status()
        summary = self._summary
        summarized = summary.end - summary.start if summary is not None else 0
        return dataclasses.replace(
            status, summarized=summarized, dropped=status.stored - status.kept - summarized,
            summary_tokens=self._summary_cost, summarizations=self.summarizations,
            failures=self.failures,
            degraded=status.pinned + status.stored - status.kept > self._base(self._pinned()),
            summary=summary.text if summary is not None else None,
            last_error=str(self.last_error) if self.last_error is not None else None)

    def _pinned(self) -> int:
        return pinned_count(self._history, keep_system=self.keep_system, keep_first=self.keep_first)

    def _base(self, pinned: int) -> int:
        """Where the verbatim turns start when nothing is trimmed: after the summary."""
        return max(self._summary.end, pinned) if self._summary is not None else pinned

    # -- the view ---------------------------------------------------------------------------
    def _first_overhead(self, pinned: int, start: int, has_summary: bool) -> int:
        """Request overhead; it depends on whether the view starts with a system message."""
        if pinned:
            first: Message | None = self._history[0]
        elif has_summary:
            return self.counter.overhead(self.tools, has_system=True)
        else:
            first = self._history[start] if start < len(self._history) else None
        return self.counter.overhead(
            self.tools, has_system=first is not None and first.role in SYSTEM_ROLES)

    def _untrimmed_tokens(self, pinned: int, base: int) -> int:
        """Tokens of the view keeping everything after the summary."""
        return (self._span(0, pinned) + self._summary_cost + self._span(base, len(self._history))
                + self._first_overhead(pinned, base, self._summary is not None))

    def plan(self) -> Context:
        """``history[:pinned] + [summary] + history[start:]``; ``tokens`` includes the summary."""
        pinned = self._pinned()
        base = self._base(pinned)
        tokens = self._untrimmed_tokens(pinned, base)
        summary = self._summary_message
        if self.max_tokens is None or tokens <= self.max_tokens:
            return Context(pinned, base, tokens, summary)
        # Over budget (a failed summarizer, or a turn too big to summarize around): the newest
        # units that fit (cut as ``cache_policy`` says). The window then starts at a user
        # message, after ``base``.
        overhead = self._first_overhead(pinned, len(self._history), summary is not None)
        return self._assemble(self.max_tokens, overhead, pinned, summary=summary,
                              summary_cost=self._summary_cost)

    # -- summarizing ------------------------------------------------------------------------
    def _fit_text(self, text: str) -> str:
        """``text`` cut so that its summary message costs at most ``max_summary_tokens``."""
        return cut_summary(
            text, self.max_summary_tokens,
            lambda candidate: self.counter.count_message(Summary(candidate, 0, 0).as_message()),
            self.summarizer)

    def _fold_end(self, pinned: int, base: int) -> int | None:
        """Where a new summary should end, the newest message being tracked, or None to not
        fold."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _tentatively(self, message: Message) -> Iterator[None]:
        """``message`` tracked as if added, to price an add before committing it; untracked on
        exit, whatever happens, so the memory is as before."""
        n, user_turns, open_calls = len(self._history), len(self._user_turns), self._open_calls
        try:
            self._track(message)
            yield
        finally:
            del self._history[n:], self._prefix[n + 1:], self._user_turns[user_turns:]
            self._open_calls = open_calls
            if self._cut is not None and self._cut.upto > n:  # it replayed the untracked message
                self._cut = None

    def _prepare(self, message: Message) -> Fold | None:
        """The fold adding ``message`` needs, or None."""
        with self._tentatively(message):
            pinned = self._pinned()
            base = self._base(pinned)
            end = self._fold_end(pinned, base)
        if end is None or end <= base:
            return None
        return Fold(pinned, base, end)

    def _checked_fold(self, message: Message | Mapping[str, Any] | Any
                      ) -> tuple[Message, Fold | None]:
        """The checked message and the fold adding it needs; shared by :meth:`add_message` and
        :meth:`aadd_message`, which differ only in how they call the summarizer."""
        message = as_message(message)
        self._check_order(message)
        return message, self._prepare(message)

    def _fold_input(self, fold: Fold) -> tuple[str | None, list[Message]]:
        """The summarizer's arguments: the previous summary and the turns to fold."""
        previous = self._summary.text if self._summary else None
        return previous, fold.select(self._history)

    def _failed(self, exc: SummarizerError) -> None:
        self.failures += 1
        self.last_error = exc
        if self.on_error == "raise":
            raise SummarizerError(f"{exc}; the message was not added and the memory, its store "
                                  "and its summary are unchanged") from exc
        warnings.warn(f"{exc}; falling back to trimming the oldest turns until a summary "
                      "succeeds", SummarizerWarning, stacklevel=3)

    def _commit(self, message: Message, fold: Fold | None, text: str | None) -> None:
        """Store the message, then the new summary (if any). A failed message write changes
        nothing; a failed summary write leaves the message stored and the old summary."""
        self.store.append(self.session, message)
        self._track(message)
        summary = self._new_summary(fold, text)
        if summary is not None:
            self.store.save_summary(self.session, summary)
            self._set_summary(summary)
            self.summarizations += 1

    async def _acommit(self, message: Message, fold: Fold | None, text: str | None) -> None:
        """:meth:`_commit` with the store writes awaited."""
        await acall(self.store, "append", self.session, message)
        self._track(message)
        summary = self._new_summary(fold, text)
        if summary is not None:
            await acall(self.store, "save_summary", self.session, summary)
            self._set_summary(summary)
            self.summarizations += 1

    def _new_summary(self, fold: Fold | None, text: str | None) -> Summary | None:
        return None if fold is None or text is None else fold.summary(self._fit_text(text))

    def add_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Append a message; if the view would then exceed the budget, first fold the oldest
        turns into the summary. Atomic: if the summarizer fails (``on_error="raise"``), the
        message is not added and nothing changes."""
        message, fold = self._checked_fold(message)
        text = None
        if fold is not None:
            try:
                text = run_summarizer(self.summarizer, *self._fold_input(fold),
                                      timeout=self.timeout)
            except SummarizerError as exc:
                self._failed(exc)
        self._commit(message, fold, text)
        return message

    async def aadd_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Async :meth:`add_message`: the summarizer (``asummarize``) and the store writes are
        awaited; concurrent calls on one memory run one at a time."""
        async with self._one_at_a_time():
            message, fold = self._checked_fold(message)
            text = None
            if fold is not None:
                try:
                    text = await arun_summarizer(self.summarizer, *self._fold_input(fold),
                                                 timeout=self.timeout)
                except SummarizerError as exc:
                    self._failed(exc)
            await self._acommit(message, fold, text)
            return message

    def __repr__(self) -> str:
        covered = f"[{self._summary.start}, {self._summary.end})" if self._summary else "none"
        return (f"{type(self).__name__}(session={self.session!r}, messages={len(self._history)}, "
                f"summary={covered})")
