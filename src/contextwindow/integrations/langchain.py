"""LangChain: our messages back as LangChain objects, and a chat history over any store.

``from_langchain`` (in :mod:`contextwindow.messages`) keeps what we do not model in
``Message.meta``; :func:`to_langchain` rebuilds the same class from it (chunks, ``ChatMessage``,
``FunctionMessage`` included), so a LangChain message that goes through a memory or a store comes
back equal, except that it always carries an id (ours, when it had none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, messages_from_dict

from ..memory import Memory
from ..messages import LANGCHAIN_TYPES, Message, as_message


def to_langchain(message: Message | Any) -> BaseMessage:
    """One message (anything :func:`~contextwindow.messages.as_message` reads) as LangChain's."""
    message = as_message(message)
    meta = dict((message.meta.value() if message.meta is not None else {}).get("langchain", {}))
    kind = meta.pop("type", None) or LANGCHAIN_TYPES[message.role]
    data: dict[str, Any] = {**meta, "id": message.id}
    data["content"] = message.content_parts if message.parts is not None else message.content or ""
    if message.name is not None:
        data["name"] = message.name
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        data["tool_calls"] = [{"name": call.name, "args": _args(call.arguments), "id": call.id,
                               "type": "tool_call"} for call in message.tool_calls]
    if message.role == "developer" and kind == "system":
        data.setdefault("additional_kwargs", {})["__openai_role__"] = "developer"
    return messages_from_dict([{"type": kind, "data": data}])[0]


def to_langchain_messages(messages: Iterable[Message | Any]) -> list[BaseMessage]:
    """A whole conversation as LangChain messages."""
    return [to_langchain(message) for message in messages]


def _args(arguments: str) -> dict[str, Any]:
    """LangChain wants parsed arguments; text that is not a JSON object is kept under ``input``
    (what LangChain itself does for custom tools)."""
    try:
        parsed = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return {"input": arguments}
    return parsed if isinstance(parsed, dict) else {"input": arguments}


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
