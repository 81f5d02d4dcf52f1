"""The gateway's cache-aware cut, continued turn by turn, and the summary that follows it.

:class:`~contextwindow.trim.CachePolicy` says where the window starts by replaying the whole
history, message by message, so its start (and the prompt) is a function of the history. A
stored session only grows, so :class:`Cuts` remembers the replay's state after the stored
history (found again by the ids the gateway gave those messages, checked against their
content) and a turn replays only what was added since: a 10,000-message session is not
replayed per turn. Messages a client sends without a session are replayed every time.

With ``--policy summary`` what the cut leaves out is summarized one *segment* at a time, a
segment being what one jump of the cut leaves out: the summary after jump ``k`` is
``summarize(summary after jump k-1, segment k)`` (:class:`SummaryChain`). So the summary
changes only when the cut moves, and it depends on the history alone (given a deterministic
summarizer): a restarted replica, or one that never saw the session, derives the same text.
Summaries are cached by their inputs (the previous text and the segment's messages, by
content), so a turn asks the summarizer only about a segment it has not summarized yet.

If the summarizer fails or runs out of time (``timeout``: seconds for all of one request's
summaries), that request gets the last summary that succeeded followed by the key facts of
everything left out after it (:class:`~contextwindow.summarize.KeyFactsSummarizer`): nothing
is lost and the request is answered; the next request that needs the segment asks again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import SummarizerError
from ..messages import Message
from ..summarize.base import run_summarizer
from ..summarize.facts import KeyFactsSummarizer
from ..trim import CachePolicy, Cut

log = logging.getLogger("contextwindow.serve")


class _Prefix(Sequence[Message]):
    """The first ``n`` messages of a list, without copying it (what a replay step sees)."""

    def __init__(self, messages: Sequence[Message], n: int) -> None:
        self._messages, self._n = messages, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Message:  # type: ignore[override]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._messages[index % self._n]


@dataclass(frozen=True, slots=True)
class Window:
    """One request's replay inputs: the messages and their prices, the prompt tokens the window
    may use (``limit``), what the overhead and the pinned head take (``fixed``), and how many
    leading messages are a stored session's history (``known``)."""

    messages: Sequence[Message]
    cost: Callable[[int], int]
    limit: int
    fixed: int
    pinned: int
    known: int


@dataclass(frozen=True, slots=True)
class Replayed:
    """The cut after a prefix of a history; with ``track``, every start it jumped to (oldest
    first) and the summary of the first ``folded`` segments (``text``)."""

    cut: Cut
    jumps: tuple[int, ...] = ()
    folded: int = 0
    text: str | None = None


class Cuts:
    """Replays of ``policy``, continued from the state remembered for a stored history."""

    def __init__(self, policy: CachePolicy, size: int = 1024) -> None:
        self.policy = policy
        self._size = size
        # (first message id, limit, tracked) -> (last replayed message, its state)
        self._memo: OrderedDict[tuple[str, int, bool], tuple[Message, Replayed]] = OrderedDict()
        self._guard = threading.Lock()

    def replay(self, window: Window, *, track: bool = False) -> tuple[Replayed, Replayed]:
        """The state after the stored history (``window.known`` messages) and after all of
        ``window.messages``; the first is remembered for the session's next turn."""
        stable = self._advance(window, self._start(window, track), window.known, track)
        self.remember(window, stable, track=track)
        return stable, self._advance(window, stable, len(window.messages), track)

    def remember(self, window: Window, state: Replayed, *, track: bool = False) -> None:
        """Keep ``state`` if it is the state after the stored history."""
        upto = state.cut.upto
        if window.known < 1 or upto != window.known:
            return
        key = (window.messages[0].id, window.limit, track)
        with self._guard:
            self._memo[key] = (window.messages[upto - 1], state)
            self._memo.move_to_end(key)
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)

    def _start(self, window: Window, track: bool) -> Replayed:
        """The remembered state of this history, if any and still valid, else the beginning."""
        initial = Replayed(self.policy.replay(_Prefix(window.messages, window.pinned),
                                              window.cost, window.limit, window.fixed,
                                              pinned=window.pinned))
        if window.known < 1:
            return initial
        with self._guard:
            found = self._memo.get((window.messages[0].id, window.limit, track))
        if found is None:
            return initial
        last, state = found
        upto = state.cut.upto
        if (upto > window.known or state.cut.basis != initial.cut.basis
                or window.messages[upto - 1].id != last.id or window.messages[upto - 1] != last):
            return initial
        return state

    def _advance(self, window: Window, state: Replayed, end: int, track: bool) -> Replayed:
        """``state`` carried on to ``messages[:end]``, one message at a time with ``track``
        (to see each jump), else in one call."""
        if state.cut.upto >= end:
            return state
        policy, messages = self.policy, window.messages
        if not track:
            return replace(state, cut=policy.replay(_Prefix(messages, end), window.cost,
                                                     window.limit, window.fixed,
                                                     pinned=window.pinned, since=state.cut))
        cut, jumps = state.cut, list(state.jumps)
        for upto in range(cut.upto + 1, end + 1):
            cut = policy.replay(_Prefix(messages, upto), window.cost, window.limit,
                                window.fixed, pinned=window.pinned, since=cut)
            if cut.start != (jumps[-1] if jumps else window.pinned):
                jumps.append(cut.start)
        return replace(state, cut=cut, jumps=tuple(jumps))


class SummaryChain:
    """The summary of what a cache-aware cut left out, one segment per jump (module docstring).

    ``facts`` writes the fallback, and shortens a fallback text to its cap (oldest facts
    first); ``failures`` counts the requests that fell back."""

    def __init__(self, summarizer: Any, *, timeout: float | None = None,
                 size: int = 1024) -> None:
        self.summarizer = summarizer
        self.facts = KeyFactsSummarizer()
        self.timeout = timeout
        self.failures = 0  # requests that fell back to key facts
        self._size = size
        self._done: OrderedDict[tuple[str | None, tuple[Message, ...]], str] = OrderedDict()
        self._guard = threading.Lock()

    def fold(self, messages: Sequence[Message], pinned: int, state: Replayed,
             stable: Replayed) -> tuple[str, bool, Replayed]:
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
        with self._guard:
            text = self._done.get(key)
            if text is not None:
                self._done.move_to_end(key)
                return text
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SummarizerError(f"the summaries took longer than {self.timeout:g} s")
        text = run_summarizer(self.summarizer, previous, key[1], timeout=timeout)
        with self._guard:
            self._done[key] = text
            while len(self._done) > self._size:
                self._done.popitem(last=False)
        return text
