"""The context assembler: the one place that turns a history into what a model sees.

A context is a composition of parts, in prompt order, each taking a share of the budget:

1. **the pinned head**: the leading system messages and the first ``keep_first`` messages
   after them (:func:`~contextwindow.trim.pinned_count`), always kept and counted;
2. **a summary** of what the window leaves out (optional): one system message right after the
   head, at most its cap (:data:`SUMMARY_SHARE` of the prompt budget by default);
3. **the recent window**: the newest whole turns that fit what is left, or the cut of a
   :class:`~contextwindow.trim.CachePolicy` so that consecutive prompts share their prefix
   (:func:`~contextwindow.trim.plan_trim` holds those rules).

The reply's reserve comes off the top: a window of ``context`` tokens gives the prompt
``context - reserve``. What happens when a conversation does not fit is the *overflow mode*
(:data:`OVERFLOW_MODES`): ``trim`` it, ``summary`` (trim and summarize what is cut),
``recall`` (trim, and bring back the older turns that the newest user message asks about:
the recall part, below), or ``none`` (refuse, with the OpenAI-style "maximum context length"
error). ``sinks`` is a kept alias of ``trim`` with ``keep_first=2``.

4. **recalled older turns** (the ``recall`` mode, :class:`~contextwindow.memory.RecallMemory`):
   whole turns from between the head and the window, ranked for the newest user message
   (BM25 by default), quoted with their dates in one system message of at most its share,
   placed right before the newest user message. The window's share is fixed, so its cut does
   not depend on what is recalled and the prompt before the block stays cache-stable.

Everything here is a function of the history, so every caller derives the same context from
the same history: :class:`~contextwindow.memory.Memory` (its stored summary is a part),
:class:`~contextwindow.generation.Generator` (the local engine; it re-checks the count against
its chat template) and the gateway (:class:`Fitter`, whose stored sessions continue the cut's
replay turn by turn through :class:`Continuations` instead of replaying 10,000 messages).
The summaries of the gateway's ``summary`` mode come from a :class:`SummarySource` (the
summarizing side lives above this module: :class:`~contextwindow.summarize.SummaryChain`).
"""

from __future__ import annotations

import datetime
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from .errors import BudgetExceededError, ConfigError
from .messages import RESULT_ROLES, SYSTEM_ROLES, Message, Summary, check_conversation
from .tokens import TokenCounter
from .trim import CachePolicy, Cut, Prefix, TrimPlan, pinned_count, plan_trim, trim

__all__ = [
    "DEFAULT_KEEP_FIRST",
    "OVERFLOW_MODES",
    "RECALL_HEADER",
    "SUMMARY_SHARE",
    "BoundedCache",
    "Context",
    "Continuations",
    "Fitted",
    "Fitter",
    "LeftOut",
    "Ranker",
    "Replay",
    "SummarySource",
    "assemble",
    "context_length_error",
    "recall_block",
    "recall_into",
    "summary_message",
]

K = TypeVar("K")
V = TypeVar("V")

#: Overflow modes: what a fit does with a conversation longer than the prompt budget.
OVERFLOW_MODES = ("trim", "sinks", "none", "summary", "recall")
#: Kept aliases among them: ``sinks`` is ``trim`` with ``keep_first=2``.
MODE_ALIASES = {"sinks": "trim"}
#: Messages after the system prompt that the ``sinks`` alias (and :class:`SinkWindowMemory`)
#: pin unless told otherwise: the first exchange, where users tend to say who they are.
DEFAULT_KEEP_FIRST = 2
#: The most of the prompt budget a per-request summary may take (the gateway's ``summary``).
SUMMARY_SHARE = 0.25
#: The share of the prompt budget recalled older turns get unless told (the ``recall`` mode
#: and :class:`~contextwindow.memory.RecallMemory`); the newest turns keep the rest.
DEFAULT_RECALL_SHARE = 0.5
#: Candidates a ranking contributes before the recall block is filled.
RECALL_CANDIDATES = 64


def summary_message(text: str, start: int = 0, end: int = 0) -> Message:
    """The one format of a summary in a context: a system message after the pinned head."""
    return Summary(text, start, end).as_message()


def context_length_error(context: int, prompt: int, reserve: int) -> BudgetExceededError:
    """The error a provider gives for a conversation that does not fit, in its words."""
    return BudgetExceededError(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt + reserve} tokens ({prompt} in the messages, {reserve} for the completion). "
        "Please reduce the length of the messages or completion.",
        budget=context - reserve, required=prompt, pinned=0)


@dataclass(frozen=True, slots=True)
class Context:
    """What the model sees, as positions in the history plus the one part that is not history:
    ``history[:pinned] + [summary] + history[start:]``. ``tokens`` counts all of it, the
    request's overhead (reply priming, tools) included; ``cut`` is the cache policy's state,
    to pass back as ``since`` when the history has grown."""

    pinned: int
    start: int
    tokens: int
    summary: Message | None = None
    cut: Cut | None = None
    recalled: Message | None = None  # the block of recalled older turns, if any
    recalled_at: int = 0  # the history index the block goes before (the newest user turn)
    recall_indices: tuple[int, ...] = ()  # the history messages the block quotes

    @property
    def dropped(self) -> int:
        """History messages between the pinned head and the window that are not shown
        verbatim (recalled ones are quoted in the recall block)."""
        return self.start - self.pinned

    def select(self, history: Sequence[V]) -> list[V]:
        """The history items shown verbatim (the summary and the recall block are not)."""
        return [*history[:self.pinned], *history[self.start:]]

    def messages(self, history: Sequence[Message]) -> list[Message]:
        """The context itself, in prompt order: the recall block right before the newest user
        turn, after the stable prefix, so a prompt cache still hits on everything before it."""
        summary = [self.summary] if self.summary is not None else []
        if self.recalled is None:
            return [*history[:self.pinned], *summary, *history[self.start:]]
        at = self.recalled_at
        return [*history[:self.pinned], *summary, *history[self.start:at], self.recalled,
                *history[at:]]


def assemble(history: Sequence[Message], cost: Callable[[int], int], max_tokens: int,
             overhead: int, *, pinned: int, summary: Message | None = None,
             summary_cost: int = 0, cache_policy: CachePolicy | None = None,
             since: Cut | None = None) -> Context:
    """Pinned head, then ``summary`` (costing ``summary_cost``), then the window that fits the
    rest of ``max_tokens`` (``cost(i)``: message ``i``'s tokens; ``overhead``: the request's
    fixed cost). Raises :class:`BudgetExceededError` when not even the newest user turn fits."""
    plan = plan_trim(history, cost, max_tokens, overhead + summary_cost, pinned=pinned,
                     cache_policy=cache_policy, since=since)
    return Context(plan.pinned, plan.start, plan.tokens, summary, plan.cut)


def opens_with_system(history: Sequence[Message], context: Context | TrimPlan) -> bool:
    """Whether the context's first message is a system one (chat framing prices that)."""
    if context.pinned:
        return history[0].role in SYSTEM_ROLES
    if isinstance(context, Context) and context.summary is not None:
        return True
    return context.start < len(history) and history[context.start].role in SYSTEM_ROLES


class BoundedCache(Generic[K, V]):
    """A thread-safe mapping that keeps the ``size`` most recently used entries: the one
    bounded cache behind every per-session and per-input memo here and in the server."""

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ConfigError(f"a cache size must be >= 1, not {size}")
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._guard:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._guard:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# -- continuing a replay --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Span:
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
class Replay:
    """The cut after a prefix of a history (the continuation a session carries from turn to
    turn); with ``track``, every start it jumped to (oldest first) and the summary of the
    first ``folded`` segments (``text``), for the ``summary`` mode."""

    cut: Cut
    jumps: tuple[int, ...] = ()
    folded: int = 0
    text: str | None = None


class Continuations:
    """Replays of ``policy``, continued from the state remembered for a stored history (found
    again by its first message id, checked against the last replayed message's content): a
    turn of a 10,000-message session replays only what was added since."""

    def __init__(self, policy: CachePolicy, size: int = 1024) -> None:
        self.policy = policy
        # (first message id, limit, tracked) -> (last replayed message, its state)
        self._memo: BoundedCache[tuple[str, int, bool], tuple[Message, Replay]] = (
            BoundedCache(size))

    def replay(self, span: Span, *, track: bool = False) -> tuple[Replay, Replay]:
        """The state after the stored history (``span.known`` messages) and after all of
        ``span.messages``; the first is remembered for the session's next turn."""
        stable = self._advance(span, self._start(span, track), span.known, track)
        self.remember(span, stable, track=track)
        return stable, self._advance(span, stable, len(span.messages), track)

    def remember(self, span: Span, state: Replay, *, track: bool = False) -> None:
        """Keep ``state`` if it is the state after the stored history."""
        upto = state.cut.upto
        if span.known >= 1 and upto == span.known:
            self._memo.put((span.messages[0].id, span.limit, track),
                           (span.messages[upto - 1], state))

    def _start(self, span: Span, track: bool) -> Replay:
        """The remembered state of this history, if any and still valid, else the beginning."""
        initial = Replay(self.policy.replay(Prefix(span.messages, span.pinned), span.cost,
                                            span.limit, span.fixed, pinned=span.pinned))
        found = (self._memo.get((span.messages[0].id, span.limit, track)) if span.known >= 1
                 else None)
        if found is None:
            return initial
        last, state = found
        upto = state.cut.upto
        if (upto > span.known or state.cut.basis != initial.cut.basis
                or span.messages[upto - 1].id != last.id or span.messages[upto - 1] != last):
            return initial
        return state

    def _advance(self, span: Span, state: Replay, end: int, track: bool) -> Replay:
        """``state`` carried on to ``messages[:end]``, one message at a time with ``track``
        (to see each jump), else in one call."""
        if state.cut.upto >= end:
            return state
        policy, messages = self.policy, span.messages
        if not track:
            return replace(state, cut=policy.replay(Prefix(messages, end), span.cost,
                                                     span.limit, span.fixed,
                                                     pinned=span.pinned, since=state.cut))
        cut, jumps = state.cut, list(state.jumps)
        for upto in range(cut.upto + 1, end + 1):
            cut = policy.replay(Prefix(messages, upto), span.cost, span.limit, span.fixed,
                                pinned=span.pinned, since=cut)
            if cut.start != (jumps[-1] if jumps else span.pinned):
                jumps.append(cut.start)
        return replace(state, cut=cut, jumps=tuple(jumps))


# -- fitting a request ----------------------------------------------------------------------------
class SummarySource(Protocol):
    """Where the ``summary`` mode gets its text (:class:`~contextwindow.summarize.SummaryChain`).

    ``fold`` summarizes what a cache-aware cut left out, one segment per jump, so the text
    moves only when the cut moves; ``extend`` summarizes what the newest-first window left
    out, extending an earlier summary of a prefix of it. Both return the text and whether it
    is a fallback (key facts after a failed summarizer); ``fit`` cuts a text to a token cap."""

    @property
    def may_block(self) -> bool: ...

    def fold(self, messages: Sequence[Message], pinned: int, state: Replay,
             stable: Replay) -> tuple[str, bool, Replay]: ...

    def extend(self, dropped: Sequence[Message]) -> tuple[str, bool]: ...

    def fit(self, text: str, limit: int, cost: Callable[[str], int], fell_back: bool) -> str: ...


class LeftOut:
    """What a fit left out, from the counts every fit result has (:class:`Fitted` and the local
    engine's ``FitResult``): ``messages``, ``prompt_tokens``, ``original_messages`` and
    ``original_tokens``."""

    messages: list[Message]
    original_messages: int
    original_tokens: int

    @property
    def prompt_tokens(self) -> int:
        raise NotImplementedError

    @property
    def trimmed_messages(self) -> int:
        return self.original_messages - len(self.messages)

    @property
    def trimmed_tokens(self) -> int:
        return max(0, self.original_tokens - self.prompt_tokens)


@dataclass(frozen=True)
class Fitted(LeftOut):
    """What is sent to the model, and what the overflow mode left out."""

    messages: list[Message]
    tokens: int
    original_tokens: int
    original_messages: int
    budget: int  # prompt tokens allowed (context - reserve)
    reserve: int  # tokens set aside for the reply

    @property
    def prompt_tokens(self) -> int:
        return self.tokens


def _mode(mode: str) -> str:
    if mode not in OVERFLOW_MODES:
        raise ConfigError(f"unknown policy {mode!r}; expected one of "
                          f"{', '.join(OVERFLOW_MODES)}")
    return MODE_ALIASES.get(mode, mode)


@dataclass(frozen=True)
class Fitter:
    """A window of ``context`` tokens shared by prompt and reply, counted by ``counter``, and
    the overflow ``mode`` for a longer conversation (module docstring). ``keep_first`` messages
    after the system prompt are pinned (default 0, or 2 for ``sinks``); ``cache_policy`` says
    where the cut falls (None: the newest turns that fit); ``summaries`` writes the ``summary``
    mode's text; ``recall_tokens`` is the ``recall`` mode's share (default: half the prompt
    budget) and ``rankers`` makes a request's ranker when :meth:`fit` is given none (e.g.
    :func:`contextwindow.retrieval.lexical.ranker`, BM25 over the request's messages)."""

    counter: TokenCounter
    context: int
    mode: str = "trim"
    keep_first: int | None = None
    cache_policy: CachePolicy | None = field(default_factory=CachePolicy)
    summaries: SummarySource | None = None
    recall_tokens: int | None = None
    rankers: Callable[[Sequence[Message]], Ranker] | None = None
    _continuations: Continuations | None = field(default=None, init=False, repr=False,
                                                 compare=False)

    def __post_init__(self) -> None:
        resolved = _mode(self.mode)
        if self.context < 16:
            raise ConfigError(f"the context window must be >= 16 tokens, not {self.context}")
        if resolved == "summary" and self.summaries is None:
            raise ConfigError("the summary mode needs a summary source (summaries=...)")
        if resolved == "recall" and self.rankers is None:
            raise ConfigError("the recall mode needs a ranker (rankers=...)")
        keep_first = self.keep_first
        if keep_first is None:
            keep_first = DEFAULT_KEEP_FIRST if self.mode == "sinks" else 0
        if keep_first < 0:
            raise ConfigError(f"keep_first must be >= 0, not {keep_first}")
        object.__setattr__(self, "keep_first", keep_first)
        if self.cache_policy is not None:
            object.__setattr__(self, "_continuations", Continuations(self.cache_policy))

    @property
    def policy(self) -> str:
        """The mode as it was given (``sinks`` stays ``sinks``): what a server advertises."""
        return self.mode

    @property
    def may_block(self) -> bool:
        """Whether :meth:`fit` may wait on a model (a summary written by one) or a store (a
        recall ranking), so a server must call it in a worker thread, never on its loop."""
        mode = _mode(self.mode)
        if mode == "recall":  # a session's ranking asks its store (I/O)
            return True
        return mode == "summary" and bool(getattr(self.summaries, "may_block", True))

    def fit(self, messages: Sequence[Message], reserve: int, *,
            counted: tuple[int, int] = (0, 0), tools: Sequence[Any] | None = None,
            budget: int | None = None, rank: Ranker | None = None) -> Fitted:
        """The messages that fit ``context - reserve`` prompt tokens (or ``budget``, when a
        caller shrinks it: the local engine, whose template may count differently).

        ``counted`` is ``(n, tokens)`` when the first ``n`` messages are a stored session's
        history (ids given by the store, never changed) known to cost ``tokens``, so a long
        history is neither summed nor replayed again on every turn. ``tools`` (the request's
        tool definitions) count against the budget too. ``rank`` ranks older turns for the
        ``recall`` mode (e.g. a session store's index); by default ``rankers`` makes one for
        the request's messages.
        """
        if reserve >= self.context:
            raise BudgetExceededError(
                f"max_tokens ({reserve}) must be smaller than the context window "
                f"({self.context} tokens)", budget=self.context, required=reserve, pinned=0)
        allowed = self.context - reserve
        limit = allowed if budget is None else budget
        known, known_tokens = counted
        original = (known_tokens + sum(map(self.counter.count_message, messages[known:]))
                    + self.counter.join_tokens(messages)
                    + self.counter.request_overhead(messages, tools))
        mode = _mode(self.mode)
        if mode == "none" or original <= limit:
            if original > limit:
                raise context_length_error(self.context, original, reserve)
            return Fitted(list(messages), original, original, len(messages), allowed, reserve)
        kept = None
        if mode == "summary":
            kept = self._summarized(messages, limit, tools, known)
        elif mode == "recall":
            kept = self._recalled(messages, limit, tools, known, rank)
        if kept is None and self._continuations is not None:
            plan = self._cut(self._continuations, messages, limit, tools, known)[0]
            kept = plan.select(messages)
            return Fitted(kept, self._planned_tokens(plan, kept), original,
                          len(messages), allowed, reserve)
        if kept is None:
            kept = trim(messages, limit, self.counter, keep_first=self.keep_first or 0,
                        tools=tools)
        return Fitted(kept, self.counter.count_messages(kept, tools), original, len(messages),
                      allowed, reserve)

    def _planned_tokens(self, plan: TrimPlan, kept: list[Message]) -> int:
        """What ``kept`` (``plan``'s selection) costs as a request, without a second pass over
        the window's prices: the plan's sum of the prices and the overhead (the same for
        ``kept``: the pinned head keeps a leading system message, and a conversation without
        one is cut at a user message), plus the template's joins of the kept neighbours."""
        return plan.tokens + self.counter.join_tokens(kept)

    def _cut(self, continuations: Continuations, messages: Sequence[Message], limit: int,
             tools: Sequence[Any] | None, known: int, *,
             track: bool = False) -> tuple[TrimPlan, Span, Replay, Replay]:
        """The cache-aware plan for ``limit`` prompt tokens (the rules of :func:`trim`), with
        the replay inputs and its states after the stored history and after all messages."""
        counter = self.counter

        def cost(index: int) -> int:
            return counter.count_message(messages[index])

        pinned = pinned_count(messages, keep_first=self.keep_first or 0)
        overhead = counter.request_overhead(messages, tools)
        fixed = overhead + sum(cost(i) for i in range(pinned))
        if fixed > limit:  # not even the pinned head fits: the plan says by how much
            plan_trim(messages, cost, limit, overhead, pinned=pinned)
        span = Span(messages, cost, limit, fixed, pinned, min(known, len(messages)))
        stable, full = continuations.replay(span, track=track)
        plan = plan_trim(messages, cost, limit, overhead, pinned=pinned,
                         cache_policy=self.cache_policy, since=full.cut)
        kept = plan.select(range(len(messages)))
        check_conversation([messages[k] for k in kept], kept)
        return plan, span, stable, full

    def _summarized(self, messages: Sequence[Message], limit: int,
                    tools: Sequence[Any] | None, known: int) -> list[Message] | None:
        """Pinned head, a summary of what is left out, the newest turns; None if the newest
        turns need the summary's share too (then plain trimming applies)."""
        assert self.summaries is not None
        cap = max(1, int(limit * SUMMARY_SHARE))
        try:
            if self._continuations is None:
                found = self._newest_summary(messages, limit - cap, tools)
            else:
                found = self._cached_summary(self._continuations, messages, limit - cap,
                                             tools, known)
        except BudgetExceededError:
            return None
        if found is None:
            return None
        kept, pinned, text, fell_back = found
        text = self.summaries.fit(text, cap, self._summary_cost, fell_back)
        return [*kept[:pinned], summary_message(text), *kept[pinned:]]

    def _cached_summary(self, continuations: Continuations, messages: Sequence[Message],
                        limit: int, tools: Sequence[Any] | None, known: int
                        ) -> tuple[list[Message], int, str, bool] | None:
        """The cache-aware window for ``limit`` tokens and the summary of what its cut left
        out (kept, pinned, text, whether it is the fallback); None if nothing is left out."""
        assert self.summaries is not None
        plan, span, stable, full = self._cut(continuations, messages, limit, tools, known,
                                             track=True)
        if not plan.dropped:
            return None
        text, fell_back, done = self.summaries.fold(messages, plan.pinned, full, stable)
        continuations.remember(span, done, track=True)
        return plan.select(messages), plan.pinned, text, fell_back

    def _newest_summary(self, messages: Sequence[Message], limit: int,
                        tools: Sequence[Any] | None
                        ) -> tuple[list[Message], int, str, bool] | None:
        """As :meth:`_cached_summary`, for the newest turns that fit."""
        assert self.summaries is not None
        kept = trim(messages, limit, self.counter, keep_first=self.keep_first or 0, tools=tools)
        pinned = pinned_count(messages, keep_first=self.keep_first or 0)
        dropped = messages[pinned:len(messages) - (len(kept) - pinned)]
        if not dropped:
            return None
        return kept, pinned, *self.summaries.extend(dropped)

    def _summary_cost(self, text: str) -> int:
        return self.counter.count_message(summary_message(text))

    def _recalled(self, messages: Sequence[Message], limit: int, tools: Sequence[Any] | None,
                  known: int, rank: Ranker | None) -> list[Message] | None:
        """The window in ``limit`` less the recall share, and the recall block before the
        newest user message; None if the newest turns need the share too (plain trimming)."""
        share = self.recall_tokens or int(limit * DEFAULT_RECALL_SHARE)
        if share >= limit:
            return None
        try:
            if self._continuations is None:
                kept = trim(messages, limit - share, self.counter,
                            keep_first=self.keep_first or 0, tools=tools)
                pinned = pinned_count(messages, keep_first=self.keep_first or 0)
                plan = TrimPlan(pinned, len(messages) - len(kept) + pinned, 0)
            else:
                plan = self._cut(self._continuations, messages, limit - share, tools, known)[0]
        except BudgetExceededError:
            return None
        window = Context(plan.pinned, plan.start, plan.tokens)
        assert self.rankers is not None
        context = recall_into(messages, window, rank or self.rankers(messages), share,
                              self.counter.count_message)
        return context.messages(messages)


# -- recalling older turns ------------------------------------------------------------------------
RECALL_HEADER = ("From earlier in this conversation (older turns quoted for reference; they are "
                 "not the latest messages):")
"""How the recall block opens, so the model does not take quoted turns for the latest ones."""


def turn_span(history: Sequence[Message], index: int, lo: int, hi: int) -> tuple[int, int]:
    """The turn holding ``history[index]`` (from its user message up to the next user
    message: the exchange with its neighbour, tool calls with their results), within
    ``[lo, hi)``."""
    begin = index
    while begin > lo and history[begin].role != "user":
        begin -= 1
    end = index + 1
    while end < hi and history[end].role != "user":
        end += 1
    return begin, end


def unit_span(history: Sequence[Message], index: int, lo: int, hi: int) -> tuple[int, int]:
    """The unit holding ``history[index]`` (a message with the tool results that follow it;
    a result belongs to the call before it), within ``[lo, hi)``: what the recall block
    quotes, so a tool result never comes back without its call."""
    begin = index
    while begin > lo and history[begin].role in RESULT_ROLES:
        begin -= 1
    end = begin + 1
    while end < hi and history[end].role in RESULT_ROLES:
        end += 1
    return begin, end


def _when(timestamp: str | None) -> str:
    """``8 May 2023`` (or ``8 May 2023 14:05`` when a time was given) for a quoted turn."""
    if timestamp is None:
        return ""
    moment = datetime.datetime.fromisoformat(timestamp)
    day = f"{moment.day} {moment:%B %Y}"
    return f"[{day} {moment:%H:%M}] " if "T" in timestamp or " " in timestamp else f"[{day}] "


def _said(message: Message) -> str:
    """A message's line in the recall block without its date: who, what (calls too)."""
    who = message.name or message.role
    text = (message.content or "").strip()
    calls = "; ".join(f"called {call.name}({call.arguments})" for call in message.tool_calls)
    if message.role in RESULT_ROLES:
        who = f"{message.role} result"
    body = " ".join(piece for piece in (text, calls) if piece)
    return f"{who}: {body}"


def quote(message: Message) -> str:
    """One message as a line of the recall block: when, who, what (calls and results too)."""
    return _when(message.timestamp) + _said(message)


#: How many tokens joining a unit to a block may cost more or less than the unit counted alone
#: (the separator, a merge across the join): :func:`recall_block` counts a block whole only
#: when a unit's fit is in doubt by this margin.
JOIN_SLACK = 4


def _block(history: Sequence[Message], spans: Sequence[tuple[int, int]]) -> Message:
    """The recall block quoting ``spans`` (in order)."""
    turns = ("\n".join(quote(history[k]) for k in range(begin, end)) for begin, end in spans)
    return Message(role="system", content=RECALL_HEADER + "\n\n" + "\n\n".join(turns),
                   id="recalled")


def recall_block(history: Sequence[Message], ranked: Sequence[int], lo: int, hi: int,
                 limit: int, count: Callable[[Message], int], *, slack: float = JOIN_SLACK
                 ) -> tuple[Message | None, tuple[int, ...], int]:
    """The recall part: the turns of the ``ranked`` history indices (best first) that lie in
    ``[lo, hi)`` (before the window, after the pinned head), as one system message of at most
    ``limit`` tokens by ``count``; with the indices it quotes and its tokens.

    Whole units (a message with its tool results), best first, each once, in the order they
    were said; a unit that would not fit is passed over for the next, and so is one that says
    word for word what a chosen unit says (a request repeated in many sessions would fill the
    block with one text; the best-ranked copy is quoted, with its date). ``(None, (), 0)``
    when nothing fits or nothing ranks.

    Each unit is counted alone; the block with it is counted whole only when that does not
    settle whether it fits, within ``slack`` tokens per join (rendering and counting the
    whole block for every candidate was most of a view's time). The block returned is counted
    whole, so its count is exact; if it is over ``limit`` (a join cost more than ``slack``),
    the choice is made again counting every candidate block (``slack=math.inf``).
    """
    header = count(_block(history, []))
    spans: list[tuple[int, int]] = []
    said: set[tuple[str, ...]] = set()  # what the chosen units say, without their dates
    low: float = 0  # the chosen block's count is within [low, high] (equal: counted whole)
    high: float = 0
    for index in ranked:
        if not lo <= index < hi or any(b <= index < e for b, e in spans):
            continue
        span = unit_span(history, index, lo, hi)
        words = tuple(_said(history[k]) for k in range(*span))
        if words in said:
            continue
        alone = count(_block(history, [span]))  # memoised: the same unit next view
        added = alone - header
        candidate = sorted([*spans, span])
        bounds: tuple[float, float]
        if not spans:
            bounds = (alone, alone)
        elif low + added - slack > limit:  # over even if the join saves the slack
            continue
        elif high + added + slack <= limit:  # fits even if the join costs the slack
            bounds = (low + added - slack, high + added + slack)
        else:
            exact = count(_block(history, candidate))
            bounds = (exact, exact)
        if bounds[1] <= limit:
            spans = candidate
            said.add(words)
            low, high = bounds
    if not spans:
        return None, (), 0
    block = _block(history, spans)
    tokens = count(block)
    if tokens > limit:
        return recall_block(history, ranked, lo, hi, limit, count, slack=math.inf)
    return block, tuple(k for begin, end in spans for k in range(begin, end)), tokens


Ranker = Callable[[Message, int, int], Sequence[int]]
"""``rank(question, lo, hi)``: history indices in ``[lo, hi)``, best first, for ``question``."""


def recall_into(history: Sequence[Message], window: Context, rank: Ranker, limit: int,
                count: Callable[[Message], int]) -> Context:
    """``window`` with the recall part added: the older turns ``rank`` puts first for the
    newest user message, in a block of at most ``limit`` tokens right before that message.
    Only what lies between the pinned head and the window is recalled; ``window`` unchanged
    when there is nothing to recall or nothing fits."""
    at = next((k for k in range(len(history) - 1, window.start - 1, -1)
               if history[k].role == "user"), None)
    if at is None or window.start <= window.pinned:
        return window
    ranked = rank(history[at], window.pinned, window.start)
    block, shown, tokens = recall_block(history, ranked, window.pinned, window.start, limit,
                                        count)
    if block is None:
        return window
    return replace(window, tokens=window.tokens + tokens, recalled=block, recalled_at=at,
                   recall_indices=shown)

