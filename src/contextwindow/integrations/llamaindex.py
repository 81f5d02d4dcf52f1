"""LlamaIndex: a memory its chat engines and agents accept, on our memories and stores.

:func:`to_llamaindex` / :func:`from_llamaindex` (the framework-free adapters of
:mod:`contextwindow.adapters`, importable here too) map blocks to OpenAI content parts and back:
text, images (a URL or a data URL), thinking, and tool calls (from ``additional_kwargs`` or
``ToolCallBlock``s, written back the same way).
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingExtraError

try:
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.bridge.pydantic import ConfigDict, Field
    from llama_index.core.memory.types import BaseMemory
except ImportError as exc:  # the framework is an extra: say which
    raise MissingExtraError(__name__, "llamaindex", exc) from None

from ..adapters import from_llamaindex, to_llamaindex, to_llamaindex_messages
from ..memory import Memory, TokenBufferMemory
from ..trim import trim

__all__ = ["ContextWindowMemory", "from_llamaindex", "to_llamaindex", "to_llamaindex_messages"]


class ContextWindowMemory(BaseMemory):
    """A LlamaIndex memory (``put`` / ``get`` / ``get_all`` / ``set`` / ``reset``) backed by one
    of our memories, so by any of our stores and with its budget rules: ``get()`` returns the
    budgeted view. When a chat engine passes ``initial_token_count`` (its system prompt and
    other prefix messages), the view is trimmed to leave that much room.

    ``SimpleChatEngine.from_defaults(llm=llm, memory=ContextWindowMemory(memory=
    TokenBufferMemory(4000, store=SQLiteStore("chats.db"), session="alice")))``
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    memory: Memory = Field(exclude=True, description="the contextwindow memory behind this one")

    @classmethod
    def class_name(cls) -> str:
        return "ContextWindowMemory"

    @classmethod
    def from_defaults(cls, memory: Memory | None = None, **kwargs: Any) -> ContextWindowMemory:
        """Wrap ``memory``; without one, a :class:`TokenBufferMemory` built from ``kwargs``
        (``max_tokens`` defaults to 4,000)."""
        if memory is None:
            memory = TokenBufferMemory(kwargs.pop("max_tokens", 4000), **kwargs)
        return cls(memory=memory)

    def get(self, input: str | None = None, initial_token_count: int = 0,
            **kwargs: Any) -> list[ChatMessage]:
        return self._fitted(self.memory.messages(), initial_token_count)

    async def aget(self, input: str | None = None, initial_token_count: int = 0,
                   **kwargs: Any) -> list[ChatMessage]:
        """Async :meth:`get`, on the memory's :meth:`~contextwindow.memory.Memory.amessages`."""
        return self._fitted(await self.memory.amessages(), initial_token_count)

    def _fitted(self, view: list[Any], initial_token_count: int) -> list[ChatMessage]:
        budget = self.memory.max_tokens
        if initial_token_count and budget is not None:
            view = trim(view, budget - initial_token_count, self.memory.counter,
                        keep_system=self.memory.keep_system, tools=self.memory.tools,
                        keep_first=getattr(self.memory, "keep_first", 0))
        return to_llamaindex_messages(view)

    def tokenizer_fn(self, text: str) -> list[int]:
        """What chat engines call to measure their system prompt before :meth:`get` (they use
        only the length), so that they pass it as ``initial_token_count``."""
        return [0] * self.memory.counter.count_text(text)

    def get_all(self) -> list[ChatMessage]:
        return to_llamaindex_messages(self.memory.history())

    def put(self, message: ChatMessage) -> None:
        self.memory.add_message(message)

    async def aput(self, message: ChatMessage) -> None:
        """Async :meth:`put`: the store write is awaited (its own async client, if it has
        one)."""
        await self.memory.aadd_message(message)

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        for message in messages:
            await self.aput(message)

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the session's messages (the store keeps no trace of the old ones)."""
        self.memory.clear()
        for message in messages:
            self.memory.add_message(message)

    def reset(self) -> None:
        self.memory.clear()
