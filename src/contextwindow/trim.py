"""Fit a conversation into a token budget without breaking it.

Rules, in order of precedence:

* The pinned head is always kept and counted: the leading system/developer messages
  (``keep_system``) and the first ``keep_first`` messages after them (a conversation's "sinks",
  e.g. where the user said their name).
* The rest is cut into *units*: a message plus the ``tool`` (or legacy ``function``) results
  that follow it, so an assistant's tool calls are never separated from their results.
* The kept window is the longest run of newest units that fits and starts at a user message.
  Nothing is ever returned over budget: if the pinned head plus the newest user turn cannot fit,
  :class:`~contextwindow.errors.BudgetExceededError` says by how much.
* What is returned is a conversation a provider accepts: if the kept messages break tool-call
  pairing (a result without its call, a call whose results are missing before the next
  message), :class:`~contextwindow.errors.InvalidMessageError` names the message and the call.
  A broken stretch that the budget drops anyway does not matter.

The scan starts at the newest message and stops at the first unit that does not fit, so the cost
is proportional to what is kept, not to the length of the history.

:class:`CachePolicy` changes only *where* the window starts, for prompt caches: it keeps the
start until the window no longer fits, then jumps to a low-water mark, so consecutive prompts
share their prefix. Every rule above still holds. Its start depends on the whole history (it is
replayed message by message), so it costs O(history) in :func:`trim`; the memories keep the
replay's state and advance it by the messages added since (docs/caching.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .adapters import as_message
from .errors import BudgetExceededError, ConfigError, InvalidMessageError
from .messages import RESULT_ROLES, SYSTEM_ROLES, Message, check_conversation
from .tokens import TokenCounter

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """Which messages a budgeted context keeps: ``[:pinned]`` and ``[start:]``."""

    pinned: int
    start: int
    tokens: int  # prompt tokens of the kept context, overhead included
    cut: Cut | None = None  # the cache-aware policy's state, when one was used

    @property
    def dropped(self) -> int:
        """How many messages between the pinned head and the window are left out."""
        return self.start - self.pinned

    def select(self, messages: Sequence[T]) -> list[T]:
        return [*messages[: self.pinned], *messages[self.start:]]


def pinned_count(messages: Sequence[Message], *, keep_system: bool = True,
                 keep_first: int = 0) -> int:
    """Length of the pinned head: leading system messages, then ``keep_first`` more messages,
    extended so that it never ends between a tool call and its results."""
    if keep_first < 0:
        raise ConfigError(f"keep_first must be >= 0, not {keep_first}")
    end, n = 0, len(messages)
    if keep_system:
        while end < n and messages[end].role in SYSTEM_ROLES:
            end += 1
    end = min(n, end + keep_first)
    while end < n and messages[end].role in RESULT_ROLES:
        end += 1
    return end


@dataclass(frozen=True, slots=True)
class Cut:
    """The cache-aware policy's state after replaying ``messages[:upto]``: the window starts
    at ``start`` and its messages take ``used`` tokens. ``basis`` is what it was computed for
    (pinned head, tokens available, low-water tokens); a cut with another basis is ignored."""

    upto: int
    start: int
    used: int
    basis: tuple[int, int, int]


#: Where :class:`CachePolicy` cuts back to, as a fraction of the budget: measured on a 300-turn
#: chat at 4,000 tokens it keeps ~95% of prompt tokens cacheable at ~74% mean fill
#: (docs/caching.md).
DEFAULT_LOW_WATER = 0.6


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Cut rarely, so that consecutive prompts share their prefix (provider prompt caches,
    a server's KV prefix cache).

    The window keeps its start, appending only, until it no longer fits; then it jumps in one
    step to the newest user turn that brings the prompt down to ``low_water`` x the budget
    (or, if no turn is that small, to the newest that fits). The start is a function of the
    history: :meth:`replay` applies the rule after each message in turn, so every caller
    (a reloaded memory, a stateless server) derives the same prompts from the same history.
    """

    low_water: float = DEFAULT_LOW_WATER

    def __post_init__(self) -> None:
        if not 0 < self.low_water <= 1:
            raise ConfigError(f"low_water must be in (0, 1], not {self.low_water}")

    def replay(self, messages: Sequence[Message], cost: Callable[[int], int], max_tokens: int,
               fixed: int, *, pinned: int, since: Cut | None = None) -> Cut:
        """The cut after every message of ``messages``, continuing from ``since`` when it was
        computed for the same basis (O(new messages) then, plus O(window) per jump)."""
        available = max_tokens - fixed
        basis = (pinned, available, int(max_tokens * self.low_water) - fixed)
        if since is None or since.basis != basis or since.upto > len(messages):
            since = Cut(pinned, pinned, 0, basis)
        start, used = since.start, since.used
        cost = _memoized(cost)  # a jump re-reads the window's costs
        for index in range(since.upto, len(messages)):
            used += cost(index)
            if used <= available:
                continue
            for target in (basis[2], available):
                found = _newest_fit(messages, cost, index + 1, target, pinned)
                if found is not None:
                    start, used = found
                    break
            # else: not even the newest turn fits yet; the cut waits for a later message
        return Cut(len(messages), start, used, basis)


class Prefix(Sequence[T]):
    """The first ``n`` items of a list, without copying it: what one step of a replay sees (a
    replay over a growing conversation that copied each prefix would be quadratic). Slices
    return lists."""

    def __init__(self, items: Sequence[T], n: int) -> None:
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step == 1:
                return list(self._items[start:stop])
            return [self._items[k] for k in range(start, stop, step)]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._items[index % self._n]


def _memoized(cost: Callable[[int], int]) -> Callable[[int], int]:
    """``cost`` that prices each index once."""
    memo: dict[int, int] = {}

    def priced(index: int) -> int:
        tokens = memo.get(index)
        if tokens is None:
            tokens = memo[index] = cost(index)
        return tokens

    return priced


def _newest_fit(messages: Sequence[Message], cost: Callable[[int], int], end: int,
                available: int, pinned: int) -> tuple[int, int] | None:
    """The longest run of whole units ending at ``end`` that fits ``available`` and starts
    at a user message (or everything after the pinned head), with its tokens; None when not
    even the newest user turn fits. Scans from the newest message back."""
    used, i, best = 0, end, None
    while i > pinned:
        unit_start = i - 1
        unit = cost(unit_start)
        while unit_start > pinned and messages[unit_start].role in RESULT_ROLES:
            unit_start -= 1
            unit += cost(unit_start)
        if used + unit > available:
            return best
        used += unit
        i = unit_start
        if messages[i].role == "user":
            best = (i, used)
    return (pinned, used) if available >= 0 else None


def plan_trim(
    messages: Sequence[Message],
    cost: Callable[[int], int],
    max_tokens: int,
    overhead: int,
    *,
    pinned: int,
    cache_policy: CachePolicy | None = None,
    since: Cut | None = None,
) -> TrimPlan:
    """The budgeted window over ``messages`` given each message's token ``cost(index)``.

    ``overhead`` is the request's fixed cost (reply priming, tools, a summary message...).
    This is the single implementation of the trimming rules; :func:`trim` and the memories
    both call it. Without ``cache_policy`` the window is the newest that fits; with one, it is
    the policy's cut, and the plan carries it (``cut``) so that a caller holding the same
    history can pass it back as ``since`` and replay only the messages added since.
    """
    if max_tokens <= 0:
        raise ConfigError(f"max_tokens must be positive, not {max_tokens}")
    fixed = overhead + sum(cost(i) for i in range(pinned))
    if fixed > max_tokens:  # not even the pinned head and the overhead fit
        _raise_budget(messages, cost, max_tokens, fixed, pinned)
    if cache_policy is not None:
        cut = cache_policy.replay(messages, cost, max_tokens, fixed, pinned=pinned, since=since)
        if fixed + cut.used > max_tokens:
            _raise_budget(messages, cost, max_tokens, fixed, pinned)
        return TrimPlan(pinned, cut.start, fixed + cut.used, cut)
    found = _newest_fit(messages, cost, len(messages), max_tokens - fixed, pinned)
    if found is None:  # not even the newest user turn fits
        _raise_budget(messages, cost, max_tokens, fixed, pinned)
    return TrimPlan(pinned, found[0], fixed + found[1])


def _raise_budget(messages: Sequence[Message], cost: Callable[[int], int], max_tokens: int,
                  fixed: int, pinned: int) -> NoReturn:
    """Explain, with figures, why not even the newest user turn fits."""
    newest_user = next((k for k in range(len(messages) - 1, pinned - 1, -1)
                        if messages[k].role == "user"), pinned)
    turn = sum(cost(k) for k in range(newest_user, len(messages)))
    raise BudgetExceededError(
        f"budget of {max_tokens} tokens is too small: the pinned messages and overhead take "
        f"{fixed} and the newest user turn ({len(messages) - newest_user} message(s)) takes "
        f"{turn}, {fixed + turn} in all",
        budget=max_tokens, required=fixed + turn, pinned=fixed)


class _Lazy(Sequence[Message]):
    """Converts input messages (dicts, SDK, LangChain, LlamaIndex objects) only when the scan
    reaches them; errors name the message's position."""

    def __init__(self, raw: Sequence[Any]) -> None:
        self._raw = raw
        self._done: dict[int, Message] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> Message:  # type: ignore[override]
        message = self._done.get(index)
        if message is None:
            try:
                message = self._done[index] = as_message(self._raw[index])
            except InvalidMessageError as exc:
                raise InvalidMessageError(f"message {index}: {exc}") from None
        return message

    def cost(self, counter: TokenCounter) -> Callable[[int], int]:
        """Each message's tokens by index; a part that cannot be priced names its message."""

        def cost(index: int) -> int:
            message = self[index]
            try:
                return counter.count_message(message)
            except InvalidMessageError as exc:
                raise InvalidMessageError(f"message {index}: {exc}") from None

        return cost


def trim(
    messages: Sequence[T],
    max_tokens: int,
    counter: TokenCounter,
    *,
    keep_system: bool = True,
    keep_first: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
    cache_policy: CachePolicy | None = None,
) -> list[T]:
    """The newest messages that fit in ``max_tokens`` (prompt tokens, as the API counts them).

    Accepts :class:`Message` objects, OpenAI dicts or SDK objects, LangChain or LlamaIndex
    messages, and returns the same objects it was given. See the module docstring for the rules.
    With ``cache_policy`` (e.g. ``CachePolicy(0.6)``) the window keeps its start across calls on
    a growing conversation, so that a provider's prompt cache hits; that replays the rule over
    the whole history, so every message is counted (the default stops at the window's edge).
    """
    view = _Lazy(messages)
    pinned = pinned_count(view, keep_system=keep_system, keep_first=keep_first)
    plan = plan_trim(view, view.cost(counter), max_tokens,
                     counter.request_overhead(view, tools), pinned=pinned,
                     cache_policy=cache_policy)
    kept = plan.select(range(len(messages)))
    check_conversation([view[k] for k in kept], kept)
    return plan.select(messages)
