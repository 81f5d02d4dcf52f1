"""Conversation memories: the whole history in a store, and a budgeted view of it.

Every memory appends to its store and never deletes from it; strategies differ only in which
messages :meth:`Memory.messages` returns. Each message is counted once, when it is added (or
loaded), and the memory keeps running totals, so adding is O(1) and reading the view costs
O(size of the view), however long the history grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from .errors import ConfigError, InvalidMessageError
from .messages import SYSTEM_ROLES, Message, as_message, to_openai
from .stores import InMemoryStore, Store, check_session
from .tokens import TokenCounter
from .trim import TrimPlan, pinned_count, plan_trim


@lru_cache(maxsize=1)
def default_counter() -> TokenCounter:
    """gpt-4o's exact counter (o200k_base + chat framing): the common case for app developers."""
    return TokenCounter.for_model("gpt-4o")


class Memory:
    """Base class: history, per-message token counts, and the store behind them.

    ``store`` defaults to a fresh :class:`InMemoryStore`; pass a :class:`SQLiteStore` (or
    another :class:`Store`) and a ``session`` id to persist and resume a conversation. One
    memory object per session and process: call :meth:`reload` to see other writers' messages.
    """

    def __init__(
        self,
        *,
        counter: TokenCounter | None = None,
        store: Store | None = None,
        session: str = "default",
        keep_system: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.counter = counter or default_counter()
        self.store: Store = store if store is not None else InMemoryStore()
        self.session = check_session(session)
        self.keep_system = keep_system
        self.tools = tools
        self.reload()

    # -- writing ----------------------------------------------------------------------------
    def add(self, role: str, content: str | None = None, **fields: Any) -> Message:
        """Append a message built from ``role``, ``content`` and OpenAI fields
        (``name``, ``tool_calls``, ``tool_call_id``, ``id``)."""
        return self.add_message({"role": role, "content": content, **fields})

    def add_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Append a message (a Message, an OpenAI dict or a LangChain message).

        The store write happens first: if it fails, the memory is unchanged.
        """
        message = as_message(message)
        self._check_order(message)
        self.store.append(self.session, message)
        self._track(message)
        return message

    def clear(self) -> None:
        """Delete this session from the store (an explicit request; trimming never deletes)."""
        self.store.delete(self.session)
        self.reload()

    def reload(self) -> None:
        """Re-read the session from the store and recount it (once)."""
        self._history: list[Message] = []
        self._prefix: list[int] = [0]  # _prefix[i] = tokens of history[:i]
        self._user_turns: list[int] = []
        self._open_calls: set[str] = set()
        for message in self.store.load(self.session):
            self._track(message)

    def _track(self, message: Message) -> None:
        if message.role == "user":
            self._user_turns.append(len(self._history))
        if message.role == "tool":
            self._open_calls.discard(message.tool_call_id or "")
        else:
            self._open_calls = {call.id for call in message.tool_calls}
        self._history.append(message)
        self._prefix.append(self._prefix[-1] + self.counter.count_message(message))

    def _check_order(self, message: Message) -> None:
        """Tool results must directly answer the pending calls, or a provider rejects the chat."""
        if message.role == "tool" and message.tool_call_id not in self._open_calls:
            raise InvalidMessageError(
                f"tool result for call {message.tool_call_id!r} does not answer a pending call of "
                f"the previous assistant message (pending: {sorted(self._open_calls) or 'none'})")
        if message.role != "tool" and self._open_calls:
            raise InvalidMessageError(
                f"tool call(s) {sorted(self._open_calls)} still need their tool results "
                f"before a {message.role} message")

    # -- reading ----------------------------------------------------------------------------
    def history(self) -> list[Message]:
        """Every message ever added to this session, in order."""
        return list(self._history)

    def messages(self) -> list[Message]:
        """The budgeted context to send to the model."""
        return self.plan().select(self._history)

    def to_openai(self) -> list[dict[str, Any]]:
        """:meth:`messages` as OpenAI chat dicts."""
        return to_openai(self.messages())

    def token_count(self) -> int:
        """Prompt tokens of :meth:`messages` (reply priming and tools included)."""
        return self.plan().tokens

    def plan(self) -> TrimPlan:
        """Which part of the history the view keeps; each strategy defines it."""
        raise NotImplementedError

    def _cost(self, index: int) -> int:
        return self._prefix[index + 1] - self._prefix[index]

    def _overhead(self) -> int:
        has_system = bool(self._history) and self._history[0].role in SYSTEM_ROLES
        return self.counter.overhead(self.tools, has_system=has_system)

    def _span_plan(self, pinned: int, start: int) -> TrimPlan:
        """A plan keeping ``[:pinned]`` and ``[start:]``, priced from the running totals."""
        kept = self._prefix[pinned] + self._prefix[-1] - self._prefix[start]
        return TrimPlan(pinned, start, kept + self._overhead())

    def __len__(self) -> int:
        return len(self._history)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(session={self.session!r}, messages={len(self._history)})"


class BufferMemory(Memory):
    """Everything, unbounded: the baseline."""

    def plan(self) -> TrimPlan:
        return self._span_plan(0, 0)


class WindowMemory(Memory):
    """The system prompt plus the last ``k`` turns (a turn: a user message and what follows it)."""

    def __init__(self, k: int, **options: Any) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, not {k}")
        self.k = k
        super().__init__(**options)

    def plan(self) -> TrimPlan:
        pinned = pinned_count(self._history, keep_system=self.keep_system)
        start = self._user_turns[-self.k] if len(self._user_turns) > self.k else pinned
        return self._span_plan(pinned, start)


class TokenBufferMemory(Memory):
    """The newest turns that fit in ``max_tokens``, after the system prompt and the first
    ``keep_first`` messages, which are always kept. Raises ``BudgetExceededError`` rather than
    going over budget."""

    def __init__(self, max_tokens: int, *, keep_first: int = 0, **options: Any) -> None:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, not {max_tokens}")
        if keep_first < 0:
            raise ConfigError(f"keep_first must be >= 0, not {keep_first}")
        self.max_tokens = max_tokens
        self.keep_first = keep_first
        super().__init__(**options)

    def plan(self) -> TrimPlan:
        pinned = pinned_count(self._history, keep_system=self.keep_system,
                              keep_first=self.keep_first)
        return plan_trim(self._history, self._cost, self.max_tokens, self._overhead(),
                         pinned=pinned)


class SinkWindowMemory(TokenBufferMemory):
    """A token buffer that pins the conversation's first messages (its "sinks"): the
    StreamingLLM idea at message level. Early turns that set up the task or say who the user
    is stay in context however long the chat runs."""

    def __init__(self, max_tokens: int, *, keep_first: int = 2, **options: Any) -> None:
        super().__init__(max_tokens, keep_first=keep_first, **options)


# ---------------------------------------------------------------------------------------------
# Summary memories: older turns folded into a running summary that counts against the budget.

import asyncio  # noqa: E402  (kept with the summary memories they serve)
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

from .errors import BudgetExceededError, StoreError, SummarizerError  # noqa: E402
from .messages import Summary  # noqa: E402
from .summarize import Summarizer, SummarizerWarning, arun_summarizer, run_summarizer  # noqa: E402

_ON_ERROR = ("raise", "trim")


class _Appended(Sequence[Message]):
    """``history + [message]`` without copying the history (for planning an add)."""

    def __init__(self, history: list[Message], message: Message) -> None:
        self._history = history
        self._message = message

    def __len__(self) -> int:
        return len(self._history) + 1

    def __getitem__(self, index: int) -> Message:  # type: ignore[override]
        if index == len(self._history) or index == -1:
            return self._message
        return self._history[index]


class _SummarizingMemory(Memory):
    """Shared machinery of :class:`SummaryMemory` and :class:`SummaryBufferMemory`.

    The view is ``history[:pinned] + [summary] + history[start:]``. The stored summary covers
    history ``[pinned, end)``; ``start`` is ``end`` unless the view had to be trimmed because a
    summarizer failed with ``on_error="trim"`` (then :attr:`degraded` is true until the next
    successful summary, which folds the trimmed messages too).
    """

    def __init__(self, summarizer: Summarizer, *, max_tokens: int | None, max_summary_tokens: int,
                 keep_first: int = 0, timeout: float | None = None, on_error: str = "raise",
                 **options: Any) -> None:
        if not callable(getattr(summarizer, "summarize", None)):
            raise ConfigError(f"{type(summarizer).__name__} has no summarize(previous, messages) "
                              "method")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, not {max_tokens}")
        if keep_first < 0:
            raise ConfigError(f"keep_first must be >= 0, not {keep_first}")
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
        self.summarizations = 0  # successful summarizer calls by this object
        self.failures = 0  # failed or timed-out summarizer calls by this object
        self.last_error: SummarizerError | None = None
        self._async_lock: tuple[Any, asyncio.Lock] | None = None
        super().__init__(**options)

    # -- state ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read messages and the summary from the store."""
        super().reload()
        summary = self.store.load_summary(self.session)
        if summary is not None:
            pinned = pinned_count(self._history, keep_system=self.keep_system,
                                  keep_first=self.keep_first)
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
        return self.plan().start > self._base()

    def _base(self) -> int:
        if self._summary is not None:
            return self._summary.end
        return pinned_count(self._history, keep_system=self.keep_system, keep_first=self.keep_first)

    # -- the view ---------------------------------------------------------------------------
    def _first_overhead(self, history: Sequence[Message], pinned: int, start: int,
                        has_summary: bool) -> int:
        """Request overhead; it depends on whether the view starts with a system message."""
        if pinned:
            first: Message | None = history[0]
        elif has_summary:
            return self.counter.overhead(self.tools, has_system=True)
        else:
            first = history[start] if start < len(history) else None
        return self.counter.overhead(
            self.tools, has_system=first is not None and first.role in SYSTEM_ROLES)

    def _plan_for(self, history: Sequence[Message], cost: Callable[[int], int],
                  span: Callable[[int, int], int], base: int | None) -> TrimPlan:
        n = len(history)
        pinned = pinned_count(history, keep_system=self.keep_system, keep_first=self.keep_first)
        base = pinned if base is None else max(base, pinned)
        has_summary = self._summary is not None
        fixed = span(0, pinned) + self._summary_cost
        tokens = fixed + span(base, n) + self._first_overhead(history, pinned, base, has_summary)
        if self.max_tokens is None or tokens <= self.max_tokens:
            return TrimPlan(pinned, base, tokens)
        # Over budget (a failed summarizer, or a turn too big to summarize around): the newest
        # units that fit. The window then starts at a user message, after ``base``.
        overhead = self._first_overhead(history, pinned, n, has_summary) + self._summary_cost
        return plan_trim(history, cost, self.max_tokens, overhead, pinned=pinned)

    def plan(self) -> TrimPlan:
        """``[:pinned]`` and ``[start:]`` of the history; ``tokens`` includes the summary."""
        return self._plan_for(self._history, self._cost,
                              lambda a, b: self._prefix[b] - self._prefix[a],
                              self._summary.end if self._summary else None)

    def messages(self) -> list[Message]:
        """Pinned head, then the summary (a system message), then the verbatim recent turns."""
        plan = self.plan()
        head = self._history[: plan.pinned]
        if self._summary_message is not None:
            head.append(self._summary_message)
        return head + self._history[plan.start:]

    # -- summarizing ------------------------------------------------------------------------
    def _fit_text(self, text: str) -> str:
        """``text`` cut so that its summary message costs at most ``max_summary_tokens`` with
        this memory's counter. A summarizer with ``fit_summary(text, fits)`` (KeyFacts,
        Combined) shortens it first: the oldest fact lines go, the newest stay. Whatever still
        does not fit is cut to its longest fitting prefix, cut back to the end of a line (if
        that keeps at least half) or of a word, so no fact is left half-written."""
        limit = self.max_summary_tokens

        def cost(candidate: str) -> int:
            return self.counter.count_message(Summary(candidate, 0, 0).as_message())

        if cost(text) <= limit:
            return text
        fit_summary = getattr(self.summarizer, "fit_summary", None)
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

    def _fold_end(self, history: Sequence[Message], cost: Callable[[int], int],
                  span: Callable[[int, int], int], base: int, pinned: int) -> int | None:
        """Where a new summary should end after adding ``history[-1]``, or None to not fold."""
        raise NotImplementedError

    def _prepare(self, message: Message) -> tuple[int, int, int] | None:
        """``(pinned, base, end)`` if adding ``message`` needs a fold: the new summary will
        cover ``[pinned, end)``, and the summarizer gets the previous summary plus
        ``history[base:end]``."""
        n = len(self._history)
        history = _Appended(self._history, message)
        new_cost = self.counter.count_message(message)

        def cost(index: int) -> int:
            return new_cost if index == n else self._cost(index)

        def span(a: int, b: int) -> int:
            return (self._prefix[min(b, n)] - self._prefix[min(a, n)]
                    + (new_cost if a <= n < b else 0))

        pinned = pinned_count(history, keep_system=self.keep_system, keep_first=self.keep_first)
        base = max(self._summary.end if self._summary else pinned, pinned)
        end = self._fold_end(history, cost, span, base, pinned)
        if end is None or end <= base:
            return None
        return pinned, base, end

    def _plan(self, message: Message | Mapping[str, Any] | Any
              ) -> tuple[Message, tuple[int, int, int] | None]:
        """The checked message and the fold adding it needs (see :meth:`_prepare`); shared by
        :meth:`add_message` and :meth:`aadd_message`, which differ only in how they summarize."""
        message = as_message(message)
        self._check_order(message)
        return message, self._prepare(message)

    def _fold_input(self, fold: tuple[int, int, int]) -> tuple[str | None, list[Message]]:
        """The summarizer's arguments for ``fold``: the previous summary and the turns to fold."""
        previous = self._summary.text if self._summary else None
        return previous, self._history[fold[1]:fold[2]]

    def _failed(self, exc: SummarizerError) -> None:
        self.failures += 1
        self.last_error = exc
        if self.on_error == "raise":
            raise SummarizerError(f"{exc}; the message was not added and the memory, its store "
                                  "and its summary are unchanged") from exc
        warnings.warn(f"{exc}; falling back to trimming the oldest turns until a summary "
                      "succeeds", SummarizerWarning, stacklevel=3)

    def _commit(self, message: Message, fold: tuple[int, int, int] | None,
                text: str | None) -> None:
        """Store the message, then the new summary (if any). A failed message write changes
        nothing; a failed summary write leaves the message stored and the old summary."""
        self.store.append(self.session, message)
        self._track(message)
        if fold is not None and text is not None:
            summary = Summary(self._fit_text(text), fold[0], fold[2])
            self.store.save_summary(self.session, summary)
            self._set_summary(summary)
            self.summarizations += 1

    def add_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Append a message; if the view would then exceed the budget, first fold the oldest
        turns into the summary. Atomic: if the summarizer fails (``on_error="raise"``), the
        message is not added and nothing changes."""
        message, fold = self._plan(message)
        text = None
        if fold is not None:
            try:
                text = run_summarizer(self.summarizer, *self._fold_input(fold),
                                      timeout=self.timeout)
            except SummarizerError as exc:
                self._failed(exc)
        self._commit(message, fold, text)
        return message

    async def aadd(self, role: str, content: str | None = None, **fields: Any) -> Message:
        """Async :meth:`add`: the summarizer is awaited (``asummarize``) instead of blocking."""
        return await self.aadd_message({"role": role, "content": content, **fields})

    async def aadd_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Async :meth:`add_message`; concurrent calls on one memory run one at a time."""
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock[0] is not loop:
            self._async_lock = (loop, asyncio.Lock())
        async with self._async_lock[1]:
            message, fold = self._plan(message)
            text = None
            if fold is not None:
                try:
                    text = await arun_summarizer(self.summarizer, *self._fold_input(fold),
                                                 timeout=self.timeout)
                except SummarizerError as exc:
                    self._failed(exc)
            self._commit(message, fold, text)
            return message

    def __repr__(self) -> str:
        covered = f"[{self._summary.start}, {self._summary.end})" if self._summary else "none"
        return (f"{type(self).__name__}(session={self.session!r}, messages={len(self._history)}, "
                f"summary={covered})")


class SummaryBufferMemory(_SummarizingMemory):
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
    (:attr:`degraded`) until a later summary succeeds.
    """

    def __init__(self, max_tokens: int, summarizer: Summarizer, *,
                 max_summary_tokens: int | None = None, keep_first: int = 0,
                 low_water: float = 0.6, timeout: float | None = None, on_error: str = "raise",
                 **options: Any) -> None:
        if not 0 < low_water <= 1:
            raise ConfigError(f"low_water must be in (0, 1], not {low_water}")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, not {max_tokens}")
        self.low_water = low_water
        super().__init__(summarizer, max_tokens=max_tokens,
                         max_summary_tokens=(max_tokens // 4 if max_summary_tokens is None
                                             else max_summary_tokens),
                         keep_first=keep_first, timeout=timeout, on_error=on_error, **options)

    def _fold_end(self, history: Sequence[Message], cost: Callable[[int], int],
                  span: Callable[[int, int], int], base: int, pinned: int) -> int | None:
        assert self.max_tokens is not None
        n = len(history)
        has_summary = self._summary is not None
        current = (span(0, pinned) + self._summary_cost + span(base, n)
                   + self._first_overhead(history, pinned, base, has_summary))
        if current <= self.max_tokens:
            return None  # fits: no summarization
        # Plan the kept window with the summary at its cap, first down to the low-water mark.
        reserve = self._first_overhead(history, pinned, n, True) + self.max_summary_tokens
        for target in (int(self.max_tokens * self.low_water), self.max_tokens):
            try:
                plan = plan_trim(history, cost, target, reserve, pinned=pinned)
            except BudgetExceededError:
                continue
            return plan.start
        # Not even the newest user turn fits beside a full-size summary: fold everything before
        # it (a shorter summary may still make it fit; if not, messages() raises
        # BudgetExceededError as TokenBufferMemory does).
        newest_user = next((k for k in range(n - 1, base - 1, -1) if history[k].role == "user"),
                           None)
        return newest_user


class SummaryMemory(_SummarizingMemory):
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

    def _fold_end(self, history: Sequence[Message], cost: Callable[[int], int],
                  span: Callable[[int, int], int], base: int, pinned: int) -> int | None:
        n = len(history)
        if history[n - 1].role != "user":
            return None
        return n - 1  # everything before the new user message
