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
