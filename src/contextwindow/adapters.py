"""Messages in the shapes other libraries use, read into :class:`Message` and written back.

Readers: OpenAI SDK objects (``resp.choices[0].message``), any langchain-core message, a
LlamaIndex ``ChatMessage``; :func:`as_message` picks the right one, so every entry point of the
package (counters, ``trim``, memories) takes all of them. OpenAI dicts, the message's own shape,
are read by :func:`contextwindow.messages.from_openai`.

Writers: :func:`to_langchain` and :func:`to_llamaindex` rebuild the framework's own objects from
what the readers kept in ``Message.meta``, so a message that goes through a memory or a store
comes back equal.

Both sides are duck-typed: this module imports no framework. A writer imports its framework's
classes when called and, without the framework, says which extra installs it. That keeps every
layer above free to take these objects without depending on the frameworks, and the framework
adapters (:mod:`contextwindow.integrations`) leaves that import the core, never the reverse.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from .errors import ConfigError, InvalidMessageError
from .messages import ROLES, Frozen, Message, ToolCall, from_openai, tool_call_from

__all__ = [
    "LANGCHAIN_TYPES", "as_message", "as_messages", "from_langchain", "from_llamaindex",
    "from_sdk_object", "to_langchain", "to_langchain_messages", "to_llamaindex",
    "to_llamaindex_messages",
]


def as_message(obj: Any) -> Message:
    """Accept a Message, an OpenAI dict or SDK object, a LangChain or a LlamaIndex message."""
    if isinstance(obj, Message):
        return obj
    if isinstance(obj, Mapping):
        return from_openai(obj)
    if hasattr(obj, "type") and hasattr(obj, "content") and hasattr(obj, "additional_kwargs"):
        return from_langchain(obj)
    if hasattr(obj, "blocks") and hasattr(obj, "role"):
        return from_llamaindex(obj)
    if callable(getattr(obj, "model_dump", None)) and hasattr(obj, "role"):
        return from_sdk_object(obj)
    raise InvalidMessageError(f"cannot read a message from {type(obj).__name__}")


def as_messages(objs: Iterable[Any]) -> list[Message]:
    """Convert a whole conversation; the error names the position of a bad message."""
    out = []
    for position, obj in enumerate(objs):
        try:
            out.append(as_message(obj))
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"message {position}: {exc}") from None
    return out


def from_sdk_object(obj: Any) -> Message:
    """An OpenAI SDK message object (``resp.choices[0].message``), read exactly as the SDK would
    send it back: its fields that were set, in JSON form."""
    try:
        raw = obj.model_dump(exclude_unset=True, mode="json",
                             exclude=getattr(obj, "__api_exclude__", None))
    except TypeError:  # a model_dump() without pydantic's options
        raw = obj.model_dump()
    return from_openai(raw)


def _framework(module: str, extra: str) -> ModuleType:
    """The framework module a writer builds its objects with, or a ConfigError naming the extra
    that installs it (the readers never need the framework: they get its objects)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"writing {extra} messages needs {module.partition('.')[0]} "
                          f"({exc}); pip install 'contextwindow[{extra}]'") from None


def _json_object(text: str) -> dict[str, Any] | None:
    """Tool-call arguments parsed, when they are a JSON object (what both frameworks want)."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


# -- LangChain ----------------------------------------------------------------------------------
_LANGCHAIN_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool",
                    "function": "function"}
LANGCHAIN_TYPES = {"system": "system", "developer": "system", "user": "human",
                   "assistant": "ai", "tool": "tool", "function": "function"}
_CHAT_ROLES = {"human": "user", "ai": "assistant", **{role: role for role in ROLES}}
_LANGCHAIN_MODELLED = ("content", "id", "name", "tool_calls", "tool_call_id", "type")


def from_langchain(obj: Any) -> Message:
    """Any langchain-core message (chunks, ``ChatMessage`` and ``FunctionMessage`` included).
    What we do not model (``additional_kwargs``, ``response_metadata``, the class) is kept in
    ``meta`` so that :func:`to_langchain` rebuilds the same object. Fields are read from the
    instance dict: pydantic's attribute fallback is slow on misses."""
    data, kind = vars(obj), obj.type
    base = kind.removesuffix("MessageChunk").lower() if isinstance(kind, str) else ""
    role = _CHAT_ROLES.get(data.get("role")) if base == "chat" else _LANGCHAIN_ROLES.get(base)
    if role == "system" and (data.get("additional_kwargs") or {}).get(
            "__openai_role__") == "developer":
        role = "developer"
    if role is None:
        raise InvalidMessageError(f"unsupported LangChain message type {kind!r}"
                                  + (f" with role {data.get('role')!r}" if base == "chat" else ""))
    calls = []
    for call in data.get("tool_calls") or ():
        if not call.get("id"):
            raise InvalidMessageError(f"LangChain tool call {call.get('name')!r} has no id")
        calls.append(ToolCall(id=call["id"], name=call["name"],
                              arguments=json.dumps(call.get("args", {}))))
    content = data["content"]
    defaults = type(obj).model_fields
    meta = {key: value for key, value in data.items()
            if key not in _LANGCHAIN_MODELLED and value not in (None, {}, [])
            and (key not in defaults or value != defaults[key].default)}
    if kind != LANGCHAIN_TYPES[role]:  # a chunk, ChatMessage...: the class to rebuild
        meta["type"] = kind
    fields: dict[str, Any] = {
        "role": role, "content": content if content != "" or not calls else None,
        "name": data.get("name"), "tool_calls": tuple(calls),
        "tool_call_id": data.get("tool_call_id"),
        "meta": {"langchain": meta} if meta else None}
    if data.get("id"):
        fields["id"] = data["id"]
    return Message(**fields)


def to_langchain(message: Message | Any) -> Any:
    """One message (anything :func:`as_message` reads) as a langchain-core ``BaseMessage``: the
    class it came in as, or the one its role maps to. It always carries an id (ours, when the
    original had none)."""
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
        data["tool_calls"] = [{"name": call.name, "args": _langchain_args(call.arguments),
                               "id": call.id, "type": "tool_call"} for call in message.tool_calls]
    if message.role == "developer" and kind == "system":
        data.setdefault("additional_kwargs", {})["__openai_role__"] = "developer"
    messages = _framework("langchain_core.messages", "langchain")
    return messages.messages_from_dict([{"type": kind, "data": data}])[0]


def to_langchain_messages(messages: Iterable[Message | Any]) -> list[Any]:
    """A whole conversation as LangChain messages."""
    return [to_langchain(message) for message in messages]


def _langchain_args(arguments: str) -> dict[str, Any]:
    """LangChain wants parsed arguments; text that is not a JSON object is kept under ``input``
    (what LangChain itself does for custom tools)."""
    if not arguments:
        return {}
    parsed = _json_object(arguments)
    return {"input": arguments} if parsed is None else parsed


# -- LlamaIndex ---------------------------------------------------------------------------------
# Blocks map to OpenAI content parts (text; images as ``image_url`` with a URL or a data URL;
# thinking as ``reasoning``) and back; tool calls are read from ``additional_kwargs`` (as
# llama-index's OpenAI LLM writes them) or from tool-call blocks and written back the same way.
# Audio, video and document blocks are refused with an error naming the block: no published rule
# prices them. The rest of ``additional_kwargs`` is kept in ``Message.meta``.
_LLAMAINDEX_ROLES = {"chatbot": "assistant", "model": "assistant"}


def from_llamaindex(obj: Any) -> Message:
    """A LlamaIndex ``ChatMessage`` as our :class:`Message` (blocks read by ``block_type``)."""
    role = getattr(obj.role, "value", obj.role)
    kwargs = dict(obj.additional_kwargs or {})
    name, tool_call_id = kwargs.pop("name", None), kwargs.pop("tool_call_id", None)
    calls = [tool_call_from(call) for call in kwargs.pop("tool_calls", None) or ()]
    blocks_called = False
    parts: list[dict[str, Any]] = []
    for position, block in enumerate(obj.blocks):
        if block.block_type == "tool_call":
            calls.append(tool_call_from({"id": block.tool_call_id, "type": "function", "function": {
                "name": block.tool_name, "arguments": block.tool_kwargs}}))
            blocks_called = True
        else:
            parts.append(_part(block, position))
    content: Any = parts
    if all(part["type"] == "text" for part in parts) and len(parts) <= 1:
        content = parts[0]["text"] if parts else (None if calls else "")
    meta: dict[str, Any] = {"additional_kwargs": kwargs} if kwargs else {}
    if blocks_called:
        meta["tool_call_blocks"] = True
    return Message(role=_LLAMAINDEX_ROLES.get(role, role), content=content, name=name,
                   tool_calls=tuple(calls), tool_call_id=tool_call_id,
                   meta=Frozen({"llamaindex": meta}) if meta else None)


def _part(block: Any, position: int) -> dict[str, Any]:
    kind = block.block_type
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "thinking":
        return {"type": "reasoning", "reasoning": block.content or ""}
    if kind == "image":
        remote = block.url is not None and block.image is None
        url = str(block.url) if remote else block.inline_url()
        image = {"url": url, **({"detail": block.detail} if block.detail else {})}
        return {"type": "image_url", "image_url": image}
    raise InvalidMessageError(f"LlamaIndex block {position} ({kind!r}) cannot be counted: "
                              "only text, image, thinking and tool_call blocks can")


def to_llamaindex(message: Message | Any) -> Any:
    """One message (anything :func:`as_message` reads) as a LlamaIndex ``ChatMessage``."""
    message = as_message(message)
    types = _framework("llama_index.core.base.llms.types", "llamaindex")
    meta = (message.meta.value() if message.meta is not None else {}).get("llamaindex", {})
    kwargs = dict(meta.get("additional_kwargs", {}))
    parts = message.content_parts
    blocks = [_block(types, part) for part in parts] if parts is not None else (
        [types.TextBlock(text=message.content)] if message.content is not None else [])
    if meta.get("tool_call_blocks"):
        blocks += [types.ToolCallBlock(tool_call_id=call.id, tool_name=call.name,
                                       tool_kwargs=_llamaindex_args(call.arguments))
                   for call in message.tool_calls]
    elif message.tool_calls:
        kwargs["tool_calls"] = [call.to_openai() for call in message.tool_calls]
    if message.tool_call_id is not None:
        kwargs["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        kwargs["name"] = message.name
    return types.ChatMessage(role=message.role, blocks=blocks, additional_kwargs=kwargs)


def to_llamaindex_messages(messages: Iterable[Message | Any]) -> list[Any]:
    """A whole conversation as LlamaIndex messages."""
    return [to_llamaindex(message) for message in messages]


def _block(types: ModuleType, part: Any) -> Any:
    if isinstance(part, str):
        return types.TextBlock(text=part)
    if part.get("type") == "text":
        return types.TextBlock(text=part["text"])
    if part.get("type") == "reasoning":
        return types.ThinkingBlock(content=part.get("reasoning"))
    if part.get("type") == "image_url":
        image = part["image_url"]
        url, detail = image["url"], image.get("detail")
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            return types.ImageBlock(image=base64.b64decode(payload), detail=detail,
                                    image_mimetype=header.removeprefix("data:").split(";")[0])
        return types.ImageBlock(url=url, detail=detail)
    raise InvalidMessageError(f"a {part.get('type')!r} content part has no LlamaIndex block")


def _llamaindex_args(arguments: str) -> dict[str, Any] | str:
    """A tool-call block's ``tool_kwargs``: parsed when a JSON object, else the text as given."""
    parsed = _json_object(arguments)
    return arguments if parsed is None else parsed
