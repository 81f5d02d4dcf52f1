"""The one message type everything else works on, and conversion to and from OpenAI chat dicts.

A :class:`Message` is immutable and hashable by content (its ``id`` is not compared), so a token
counter can cache a message's count and re-counting a long history costs one dict look-up each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidMessageError

ROLES = ("system", "developer", "user", "assistant", "tool")
SYSTEM_ROLES = ("system", "developer")


def new_id() -> str:
    """A fresh message id (random, URL-safe)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call requested by an assistant message (OpenAI ``tool_calls`` entry)."""

    id: str
    name: str
    arguments: str  # the JSON string the model produced, kept verbatim

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message: ``role`` plus text ``content`` and the OpenAI tool-calling fields."""

    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    id: str = field(default_factory=new_id, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidMessageError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if self.content is not None and not isinstance(self.content, str):
            raise InvalidMessageError(
                f"content must be a string or None, not {type(self.content).__name__}")
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidMessageError(f"name must be a string, not {type(self.name).__name__}")
        if not isinstance(self.id, str) or not self.id:
            raise InvalidMessageError("id must be a non-empty string")
        if not isinstance(self.tool_calls, tuple) or not all(
                isinstance(call, ToolCall) for call in self.tool_calls):
            raise InvalidMessageError("tool_calls must be a tuple of ToolCall")
        if self.tool_calls and self.role != "assistant":
            raise InvalidMessageError(f"only assistant messages carry tool_calls, not {self.role!r}")
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidMessageError("a tool message needs the tool_call_id it answers")
        if self.role != "tool" and self.tool_call_id is not None:
            raise InvalidMessageError(f"tool_call_id belongs on tool messages, not {self.role!r}")
        if self.content is None and not self.tool_calls:
            raise InvalidMessageError(f"a {self.role} message needs content")

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions dict for this message (no ``id``: the API has none)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    def to_record(self) -> dict[str, Any]:
        """``to_openai()`` plus the ``id``: what stores persist."""
        return {**self.to_openai(), "id": self.id}


def _text_of(content: Any) -> str | None:
    """OpenAI content may be a list of parts; only text parts can be counted and kept."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(
                    part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InvalidMessageError(f"unsupported content part {kind!r}: only text parts are supported")
        return "".join(texts)
    raise InvalidMessageError(f"content must be a string, a list of text parts or null, not {type(content).__name__}")


def _tool_call(raw: Any) -> ToolCall:
    if isinstance(raw, ToolCall):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(f"a tool call must be an object, not {type(raw).__name__}")
    function = raw.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InvalidMessageError("a tool call needs function.name")
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidMessageError("a tool call needs a string id")
    return ToolCall(id=call_id, name=function["name"], arguments=arguments)


def from_openai(raw: Mapping[str, Any]) -> Message:
    """One OpenAI chat dict (or a stored record with ``id``) to a :class:`Message`."""
    if isinstance(raw, Message):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(f"a message must be an object, not {type(raw).__name__}")
    if "role" not in raw:
        raise InvalidMessageError("a message needs a role")
    known = {"role", "content", "name", "tool_calls", "tool_call_id", "id"}
    unknown = set(raw) - known
    if unknown:
        raise InvalidMessageError(f"unknown message field(s): {', '.join(sorted(map(str, unknown)))}")
    calls = raw.get("tool_calls") or ()
    if not isinstance(calls, (list, tuple)):
        raise InvalidMessageError("tool_calls must be a list")
    fields: dict[str, Any] = dict(
        role=raw["role"], content=_text_of(raw.get("content")), name=raw.get("name"),
        tool_calls=tuple(_tool_call(call) for call in calls), tool_call_id=raw.get("tool_call_id"))
    if raw.get("id") is not None:
        fields["id"] = raw["id"]
    return Message(**fields)


_LANGCHAIN_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def from_langchain(obj: Any) -> Message:
    """A langchain-core ``BaseMessage`` to a :class:`Message` (duck-typed: no import needed)."""
    role = _LANGCHAIN_ROLES.get(getattr(obj, "type", None))
    if role is None:
        raise InvalidMessageError(f"unsupported LangChain message type {getattr(obj, 'type', None)!r}")
    calls = tuple(
        ToolCall(id=call["id"], name=call["name"], arguments=json.dumps(call.get("args", {})))
        for call in getattr(obj, "tool_calls", None) or ())
    content = _text_of(obj.content) if obj.content != "" or not calls else None
    fields: dict[str, Any] = dict(role=role, content=content, name=getattr(obj, "name", None),
                                  tool_calls=calls,
                                  tool_call_id=getattr(obj, "tool_call_id", None))
    if getattr(obj, "id", None):
        fields["id"] = obj.id
    return Message(**fields)


def as_message(obj: Any) -> Message:
    """Accept a Message, an OpenAI dict or a LangChain message."""
    if isinstance(obj, Message):
        return obj
    if isinstance(obj, Mapping):
        return from_openai(obj)
    if hasattr(obj, "type") and hasattr(obj, "content"):
        return from_langchain(obj)
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


def to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """A list of OpenAI chat dicts, ready for ``client.chat.completions.create(messages=...)``."""
    return [message.to_openai() for message in messages]


@dataclass(frozen=True, slots=True)
class Summary:
    """A summary of history messages ``[start, end)`` (indices into the session's history)."""

    text: str
    start: int
    end: int

    def as_message(self) -> Message:
        """How the summary enters the context: a system message placed after the pinned head."""
        return Message(role="system", content=f"Summary of the earlier conversation:\n{self.text}",
                       id=f"summary-{self.start}-{self.end}")
