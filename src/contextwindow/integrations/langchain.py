"""LangChain: a chat history over any store, on our memories.

:func:`to_langchain` and :func:`to_langchain_messages` (the framework-free adapters of
:mod:`contextwindow.adapters`, importable here too) rebuild the class a message came in as from
what ``from_langchain`` kept in ``Message.meta`` (chunks, ``ChatMessage``, ``FunctionMessage``
included), so a LangChain message that goes through a memory or a store comes back equal, except
that it always carries an id (ours, when it had none).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MissingExtraError

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage
except ImportError as exc:  # the framework is an extra: say which
    raise MissingExtraError(__name__, "langchain", exc) from None

from ..adapters import to_langchain, to_langchain_messages
from ..memory import Memory

__all__ = ["ContextWindowChatHistory", "to_langchain", "to_langchain_messages"]


class ContextWindowChatHistory(BaseChatMessageHistory):
    """A ``BaseChatMessageHistory`` over one of our memories, and so over any store (SQLite,
    Redis, PostgreSQL...). :attr:`messages` is the memory's budgeted view, which is what
    ``RunnableWithMessageHistory`` puts in the prompt: trimming (or summarizing) happens before
    every model call. Use :meth:`Memory.history` for everything ever stored.

    ``RunnableWithMessageHistory(chain, lambda session: ContextWindowChatHistory(
    TokenBufferMemory(4000, store=store, session=session)), ...)``
    """

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return to_langchain_messages(self.memory.messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        for message in messages:
            self.memory.add_message(message)

    def clear(self) -> None:
        self.memory.clear()
