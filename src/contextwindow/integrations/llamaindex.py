"""LlamaIndex: ``ChatMessage`` in and out, and a memory its chat engines and agents accept.

Blocks map to OpenAI content parts (text; images as ``image_url`` with a URL or a data URL;
thinking as ``reasoning``) and back; tool calls are read from ``additional_kwargs`` (as
llama-index's OpenAI LLM writes them) or from ``ToolCallBlock``s and written back the same way.
Audio, video and document blocks are refused with an error naming the block: no published rule
prices them. The rest of ``additional_kwargs`` is kept in ``Message.meta``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.memory.types import BaseMemory

from ..errors import InvalidMessageError
from ..memory import Memory
from ..messages import Message, as_message, tool_call_from
from ..trim import trim

_ROLES = {"chatbot": "assistant", "model": "assistant"}


def from_llamaindex(obj: Any) -> Message:
    """A LlamaIndex ``ChatMessage`` as our :class:`Message`."""
    role = getattr(obj.role, "value", obj.role)
    kwargs = dict(obj.additional_kwargs or {})
    name, tool_call_id = kwargs.pop("name", None), kwargs.pop("tool_call_id", None)
    calls = [tool_call_from(call) for call in kwargs.pop("tool_calls", None) or ()]
    blocks_called = False
    parts: list[dict[str, Any]] = []
    for position, block in enumerate(obj.blocks):
        if isinstance(block, ToolCallBlock):
            calls.append(tool_call_from({"id": block.tool_call_id, "type": "function", "function": {
                "name": block.tool_name, "arguments": block.tool_kwargs}}))
            blocks_called = True
        else:
            parts.append(_part(block, position))
    content: Any = parts
    if all(part["type"] == "text" for part in parts) and len(parts) <= 1:
        content = parts[0]["text"] if parts else (None if calls else "")
    meta = {"additional_kwargs": kwargs} if kwargs else {}
    if blocks_called:
        meta["tool_call_blocks"] = True
    return Message(role=_ROLES.get(role, role), content=content, name=name,
                   tool_calls=tuple(calls), tool_call_id=tool_call_id,
                   meta={"llamaindex": meta} if meta else None)


def _part(block: Any, position: int) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "reasoning", "reasoning": block.content or ""}
    if isinstance(block, ImageBlock):
        remote = block.url is not None and block.image is None
        url = str(block.url) if remote else block.inline_url()
        image = {"url": url, **({"detail": block.detail} if block.detail else {})}
        return {"type": "image_url", "image_url": image}
    raise InvalidMessageError(f"LlamaIndex block {position} ({block.block_type!r}) cannot be "
                              "counted: only text, image, thinking and tool_call blocks can")


def to_llamaindex(message: Message | Any) -> ChatMessage:
    """One message (anything :func:`~contextwindow.messages.as_message` reads) as a
    LlamaIndex ``ChatMessage``."""
    message = as_message(message)
    meta = (message.meta.value() if message.meta is not None else {}).get("llamaindex", {})
    kwargs = dict(meta.get("additional_kwargs", {}))
    parts = message.content_parts
    blocks = [_block(part) for part in parts] if parts is not None else (
        [TextBlock(text=message.content)] if message.content is not None else [])
    if meta.get("tool_call_blocks"):
        blocks += [ToolCallBlock(tool_call_id=call.id, tool_name=call.name,
                                 tool_kwargs=_json_or_text(call.arguments))
                   for call in message.tool_calls]
    elif message.tool_calls:
        kwargs["tool_calls"] = [call.to_openai() for call in message.tool_calls]
    if message.tool_call_id is not None:
        kwargs["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        kwargs["name"] = message.name
    return ChatMessage(role=message.role, blocks=blocks, additional_kwargs=kwargs)


def to_llamaindex_messages(messages: Iterable[Message | Any]) -> list[ChatMessage]:
    """A whole conversation as LlamaIndex messages."""
    return [to_llamaindex(message) for message in messages]


def _block(part: Any) -> Any:
    if isinstance(part, str):
        return TextBlock(text=part)
    if part.get("type") == "text":
        return TextBlock(text=part["text"])
    if part.get("type") == "reasoning":
        return ThinkingBlock(content=part.get("reasoning"))
    if part.get("type") == "image_url":
        image = part["image_url"]
        url, detail = image["url"], image.get("detail")
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            return ImageBlock(image=base64.b64decode(payload), detail=detail,
                              image_mimetype=header.removeprefix("data:").split(";")[0])
        return ImageBlock(url=url, detail=detail)
    raise InvalidMessageError(f"a {part.get('type')!r} content part has no LlamaIndex block")


def _json_or_text(arguments: str) -> dict[str, Any] | str:
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


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
            from ..memory import TokenBufferMemory

            memory = TokenBufferMemory(kwargs.pop("max_tokens", 4000), **kwargs)
        return cls(memory=memory)

    def get(self, input: str | None = None, initial_token_count: int = 0,
            **kwargs: Any) -> list[ChatMessage]:
        view = self.memory.messages()
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

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the session's messages (the store keeps no trace of the old ones)."""
        self.memory.clear()
        for message in messages:
            self.memory.add_message(message)

    def reset(self) -> None:
        self.memory.clear()
