"""The memory base class: the whole history in a store, counted once, and a budgeted view.

Every memory appends to its store and never deletes from it; strategies differ only in which
messages :meth:`Memory.messages` returns. Each message is counted once, when it is added (or
loaded), and the memory keeps running totals, so adding is O(1) and reading the view costs
O(size of the view), however long the history grows.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..adapters import as_message, to_langchain_messages, to_llamaindex_messages
from ..errors import BudgetExceededError, ConfigError
from ..messages import SYSTEM_ROLES, Message, Pending, check_next, to_openai
from ..stores import InMemoryStore, Store
from ..stores.aio import acall, is_native
from ..stores.base import check_session
from ..tokens import TokenCounter
from ..trim import CachePolicy, Cut
from ..window import Context, assemble, opens_with_system

__all__ = ["Memory", "MemoryStatus", "check_limits", "default_counter"]


@lru_cache(maxsize=1)
def default_counter() -> TokenCounter:
    """gpt-4o's exact counter (o200k_base + chat framing): the common case for app developers."""
    return TokenCounter.for_model("gpt-4o")


def check_limits(max_tokens: int | None, keep_first: int = 0) -> None:
    """The limits every bounded memory takes: a token budget of at least one (``None``: no
    budget) and a non-negative count of pinned messages."""
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, not {max_tokens}")
    if keep_first < 0:
        raise ConfigError(f"keep_first must be >= 0, not {keep_first}")


@dataclass(frozen=True, slots=True)
class MemoryStatus:
    """What a memory holds and what its view keeps, in one snapshot (for status lines and
    reports). ``stored = kept + summarized + dropped``."""

    stored: int  # messages in the history
    kept: int  # history messages in the view, verbatim
    pinned: int  # of which the pinned head
    summarized: int  # history messages the summary covers
    dropped: int  # history messages neither kept nor summarized
    tokens: int  # prompt tokens of the view, overhead included
    budget: int | None  # the memory's max_tokens, if it has one
    over_budget: bool = False  # the view cannot fit the budget (messages() raises)
    summary_tokens: int = 0  # the summary message's tokens (0 without a summary)
    summarizations: int | None = None  # successful summarizer calls (summary memories only)
    failures: int | None = None  # failed summarizer calls (summary memories only)
    degraded: bool = False  # the view trims turns no summary covers
    summary: str | None = None  # the stored summary text
    last_error: str | None = None  # the last summarizer error
    recalled: int = 0  # older history messages quoted in the recall block (RecallMemory)

    @property
    def summarizer_calls(self) -> int:
        """Summarizer calls so far, successful or not (0 for memories without a summarizer)."""
        return (self.summarizations or 0) + (self.failures or 0)


class Memory:
    """Base class: history, per-message token counts, and the store behind them.

    ``store`` defaults to a fresh :class:`InMemoryStore`; pass a :class:`SQLiteStore` (or
    another :class:`Store`) and a ``session`` id to persist and resume a conversation. One
    memory object per session and process: call :meth:`reload` to see other writers' messages.
    """

    max_tokens: int | None = None  # the view's budget; strategies with one set it
    cache_policy: CachePolicy | None = None  # how a budgeted view cuts (None: newest that fit)

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
        self._async_lock: tuple[Any, asyncio.Lock] | None = None
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

    async def aadd(self, role: str, content: str | None = None, **fields: Any) -> Message:
        """Async :meth:`add`."""
        return await self.aadd_message({"role": role, "content": content, **fields})

    async def aadd_message(self, message: Message | Mapping[str, Any] | Any) -> Message:
        """Async :meth:`add_message`: the store write is awaited on the store's own async
        client where it has one (Redis), else on a worker thread
        (:mod:`contextwindow.stores.aio`); concurrent calls on one memory run one at a time."""
        async with self._one_at_a_time():
            message = as_message(message)
            self._check_order(message)
            await acall(self.store, "append", self.session, message)
            self._track(message)
            return message

    async def amessages(self) -> list[Message]:
        """Async :meth:`messages`. The view is built in-process from the counted history; a
        memory whose view reads its store (recall searches it) builds it on a worker thread
        unless the store answers natively."""
        if self._view_reads_store and not is_native(self.store, "search"):
            return await asyncio.to_thread(self.messages)
        return self.messages()

    _view_reads_store = False  # set by memories whose messages() queries the store

    @asynccontextmanager
    async def _one_at_a_time(self) -> AsyncIterator[None]:
        """This memory's async writers, serialised (one lock per event loop)."""
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock[0] is not loop:
            self._async_lock = (loop, asyncio.Lock())
        async with self._async_lock[1]:
            yield

    def clear(self) -> None:
        """Delete this session from the store (an explicit request; trimming never deletes)."""
        self.store.delete(self.session)
        self.reload()

    def reload(self) -> None:
        """Re-read the session from the store and recount it (once)."""
        self._history: list[Message] = []
        self._prefix: list[int] = [0]  # _prefix[i] = tokens of history[:i]
        self._user_turns: list[int] = []
        self._open_calls = Pending()  # the tool results the history still owes
        self._cut: Cut | None = None  # the cache policy's replay so far (see _assemble)
        for message in self.store.load(self.session):
            self._track(message)

    def _track(self, message: Message) -> None:
        if message.role == "user":
            self._user_turns.append(len(self._history))
        self._open_calls = self._open_calls.after(message, len(self._history))
        self._history.append(message)
        self._prefix.append(self._prefix[-1] + self.counter.count_message(message))

    def _check_order(self, message: Message) -> None:
        """Refuse, before anything is stored, what a provider would reject (a tool result that
        does not answer a pending call) or what cannot be counted (an audio part...)."""
        check_next(self._open_calls, message, len(self._history))
        self.counter.count_message(message)  # cached: _track reuses the count

    # -- reading ----------------------------------------------------------------------------
    def history(self) -> list[Message]:
        """Every message ever added to this session, in order."""
        return list(self._history)

    def messages(self) -> list[Message]:
        """The budgeted context to send to the model."""
        return self.plan().messages(self._history)

    def to_openai(self) -> list[dict[str, Any]]:
        """:meth:`messages` as OpenAI chat dicts."""
        return to_openai(self.messages())

    def to_langchain(self) -> list[Any]:
        """Deprecated: ``contextwindow.adapters.to_langchain_messages(memory.messages())``
        (a memory keeps our messages; the framework shapes are the adapters' business)."""
        warnings.warn("Memory.to_langchain() is deprecated; use contextwindow.adapters."
                      "to_langchain_messages(memory.messages())", DeprecationWarning, stacklevel=2)
        return to_langchain_messages(self.messages())

    def to_llamaindex(self) -> list[Any]:
        """Deprecated: ``contextwindow.adapters.to_llamaindex_messages(memory.messages())``."""
        warnings.warn("Memory.to_llamaindex() is deprecated; use contextwindow.adapters."
                      "to_llamaindex_messages(memory.messages())", DeprecationWarning, stacklevel=2)
        return to_llamaindex_messages(self.messages())

    def token_count(self) -> int:
        """Prompt tokens of :meth:`messages` (reply priming and tools included)."""
        return self.plan().tokens

    def plan(self) -> Context:
        """What the view shows (:class:`~contextwindow.window.Context`); each strategy says."""
        raise NotImplementedError

    def status(self) -> MemoryStatus:
        """A snapshot of the history and the view. Never raises: when the view cannot fit the
        budget (:meth:`messages` raises ``BudgetExceededError``), ``over_budget`` is true and
        nothing counts as kept."""
        n = len(self._history)
        try:
            plan = self.plan()
        except BudgetExceededError:
            plan = Context(0, n, 0)
            over_budget = True
        else:
            over_budget = False
        return MemoryStatus(stored=n, kept=plan.pinned + n - plan.start, pinned=plan.pinned,
                            summarized=0, dropped=plan.dropped, tokens=plan.tokens,
                            budget=self.max_tokens, over_budget=over_budget,
                            recalled=len(plan.recall_indices))

    def _cost(self, index: int) -> int:
        return self._prefix[index + 1] - self._prefix[index]

    def _span(self, start: int, end: int) -> int:
        """Tokens of ``history[start:end]``, from the running totals."""
        return self._prefix[end] - self._prefix[start]

    def _overhead(self, context: Context | None = None) -> int:
        """The request overhead of a view; it depends on whether the view opens with a
        system message (the whole history's first message when ``context`` is not given)."""
        if context is None:
            has_system = bool(self._history) and self._history[0].role in SYSTEM_ROLES
        else:
            has_system = opens_with_system(self._history, context)
        return self.counter.overhead(self.tools, has_system=has_system)

    def _assemble(self, max_tokens: int, overhead: int, pinned: int, *,
                  summary: Message | None = None, summary_cost: int = 0) -> Context:
        """The context assembler (:func:`~contextwindow.window.assemble`) over the history with
        this memory's ``cache_policy``, whose replay continues from the previous call's (only
        the messages added since are replayed)."""
        context = assemble(self._history, self._cost, max_tokens, overhead, pinned=pinned,
                           summary=summary, summary_cost=summary_cost,
                           cache_policy=self.cache_policy, since=self._cut)
        self._cut = context.cut
        return context

    def _keep_span(self, pinned: int, start: int) -> Context:
        """Keep ``[:pinned]`` and ``[start:]``, priced from the running totals."""
        kept = self._span(0, pinned) + self._span(start, len(self._history))
        return Context(pinned, start, kept + self._overhead())

    def __len__(self) -> int:
        return len(self._history)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(session={self.session!r}, messages={len(self._history)})"
