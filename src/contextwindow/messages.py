"""The one message type everything else works on, and conversion from what the ecosystem hands us.

A :class:`Message` is immutable and hashable by content (its ``id`` is not compared), so a token
counter can cache a message's count and re-counting a long history costs one dict look-up each.

Nothing a caller gives is lost: a content list (text, images, audio...) is kept verbatim in
``parts`` (``content`` then holds its text, for summarizers and previews), provider fields we do
not model (``refusal``, ``annotations``, ``audio``, ``function_call``, future ones) are kept in
``extra`` and sent back as given, and framework data that is never sent to a provider (LangChain's
``response_metadata``, LlamaIndex's ``additional_kwargs``...) is kept in ``meta``. Inputs are read
by duck typing: this module imports no framework.

:func:`check_next` is the one tool-call pairing check that ``trim``, the memories and the CLI
share: a provider rejects a conversation that breaks it with a 400. (The readers, the message
type and the check are one module on purpose, a little over 400 lines: they share its
invariants.)
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidMessageError

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SYSTEM_ROLES = ("system", "developer")
RESULT_ROLES = ("tool", "function")  # messages that answer the assistant message before them
_MODELLED = ("role", "content", "name", "tool_calls", "tool_call_id", "id", "meta")
_NULLABLE = ("name", "tool_calls", "tool_call_id")  # kept in ``extra`` when given as null


def new_id() -> str:
    """A fresh message id (random, URL-safe)."""
    return os.urandom(16).hex()


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: pydantic models by their dump, bytes as base64,
    anything else (a LangChain tool artifact...) as its ``str``."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


class Frozen:
    """An immutable JSON value (a content list, a dict of fields), compared and hashed by its
    JSON text: Python caches a string's hash, so a cached count of a message carrying a large
    image costs one look-up. Key order is kept, so what goes in comes out in the same order."""

    __slots__ = ("text",)

    def __init__(self, value: Any) -> None:
        self.text = json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                               default=_jsonable)

    def value(self) -> Any:
        """A fresh copy of the value (callers may mutate it)."""
        return json.loads(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frozen) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Frozen({self.text[:80]})"


def _frozen(value: Any) -> Frozen | None:
    return value if value is None or isinstance(value, Frozen) else Frozen(value)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call requested by an assistant message (an OpenAI ``tool_calls`` entry):
    ``function`` calls carry JSON ``arguments``, ``custom`` calls free-form ``input``."""

    id: str
    name: str
    arguments: str  # kept verbatim, as the model produced it
    type: str = "function"

    def to_openai(self) -> dict[str, Any]:
        if self.type == "custom":
            return {"id": self.id, "type": "custom",
                    "custom": {"name": self.name, "input": self.arguments}}
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def part_text(part: Any) -> str | None:
    """The text a content part carries (a text part or a bare string), else None."""
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(
            part.get("text"), str):
        return part["text"]
    return None


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message: ``role``, its text ``content``, the OpenAI tool-calling fields, and what
    else it came with (``parts``, ``extra``, ``meta``: see the module docstring).

    ``Message(role="user", content=[...parts])`` keeps the list in ``parts`` and sets
    ``content`` to the text of its text parts, joined by newlines.
    """

    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    id: str = field(default_factory=new_id, compare=False)
    parts: Frozen | None = None
    extra: Frozen | None = None
    meta: Frozen | None = None

    def __post_init__(self) -> None:
        if isinstance(self.content, (list, tuple)):
            for position, part in enumerate(self.content):
                if not isinstance(part, str) and not (
                        isinstance(part, Mapping) and isinstance(part.get("type"), str)):
                    raise InvalidMessageError(
                        f"content part {position} must be a string or an object with a type")
            object.__setattr__(self, "parts", Frozen(list(self.content)))
            object.__setattr__(self, "content", "\n".join(
                text for text in map(part_text, self.content) if text is not None))
        if self.parts is not None or self.extra is not None or self.meta is not None:
            for name in ("parts", "extra", "meta"):
                object.__setattr__(self, name, _frozen(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        if self.role not in ROLES:
            raise InvalidMessageError(
                f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if self.content is not None and not isinstance(self.content, str):
            raise InvalidMessageError("content must be a string, a list of parts or None, "
                                      f"not {type(self.content).__name__}")
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidMessageError(f"name must be a string, not {type(self.name).__name__}")
        if not isinstance(self.id, str) or not self.id:
            raise InvalidMessageError("id must be a non-empty string")
        if not isinstance(self.tool_calls, tuple) or not all(
                isinstance(call, ToolCall) for call in self.tool_calls):
            raise InvalidMessageError("tool_calls must be a tuple of ToolCall")
        if self.tool_calls and self.role != "assistant":
            raise InvalidMessageError(
                f"only assistant messages carry tool_calls, not {self.role!r}")
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidMessageError("a tool message needs the tool_call_id it answers")
        if self.role == "function" and not self.name:
            raise InvalidMessageError("a function message needs the name of the function")
        if self.role != "tool" and self.tool_call_id is not None:
            raise InvalidMessageError(f"tool_call_id belongs on tool messages, not {self.role!r}")
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise InvalidMessageError(f"a {self.role} message needs content")

    @property
    def content_parts(self) -> list[Any] | None:
        """The content list exactly as given, or None when the content was a string."""
        return None if self.parts is None else self.parts.value()

    @property
    def fields(self) -> dict[str, Any]:
        """The provider fields kept verbatim in ``extra`` (a fresh dict)."""
        return {} if self.extra is None else self.extra.value()

    @property
    def function_call(self) -> dict[str, Any] | None:
        """The legacy ``function_call`` of an assistant message, if any."""
        if self.extra is None or '"function_call"' not in self.extra.text:
            return None
        call = self.fields.get("function_call")
        return call if isinstance(call, dict) else None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions dict (no ``id``: the API has none). ``extra`` fields are
        sent back as given, as the OpenAI SDK does when a response message is appended."""
        out: dict[str, Any] = {"role": self.role, "content": (
            self.content if self.parts is None else self.parts.value())}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.extra is not None:
            out.update(self.extra.value())
        return out

    def to_record(self) -> dict[str, Any]:
        """``to_openai()`` plus the ``id`` and ``meta``: what stores persist."""
        record = {**self.to_openai(), "id": self.id}
        if self.meta is not None:
            record["meta"] = self.meta.value()
        return record


def tool_call_from(raw: Any) -> ToolCall:
    """One tool call from an OpenAI dict or SDK object (or a ToolCall, returned as is)."""
    if isinstance(raw, ToolCall):
        return raw
    if not isinstance(raw, Mapping):
        dump = getattr(raw, "model_dump", None)  # an OpenAI SDK tool call object
        if not callable(dump):
            raise InvalidMessageError(f"a tool call must be an object, not {type(raw).__name__}")
        raw = dump(mode="json")
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidMessageError("a tool call needs a string id")
    kind = raw.get("type", "function")
    body = raw.get(kind)
    if kind not in ("function", "custom") or not isinstance(body, Mapping) or not isinstance(
            body.get("name"), str):
        raise InvalidMessageError(f"tool call {call_id!r} needs type 'function' or 'custom' "
                                  "and a name")
    arguments = body.get("arguments" if kind == "function" else "input", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=call_id, name=body["name"], arguments=arguments, type=kind)


def from_openai(raw: Mapping[str, Any]) -> Message:
    """One OpenAI chat dict (or a stored record with ``id`` and ``meta``) to a :class:`Message`.

    Fields we do not model go to ``extra`` verbatim, and so do modelled ones given as null or
    empty (``"tool_calls": null``), so that ``to_openai()`` gives back what came in.
    """
    if isinstance(raw, Message):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(f"a message must be an object, not {type(raw).__name__}")
    if "role" not in raw:
        raise InvalidMessageError("a message needs a role")
    calls = raw.get("tool_calls") or ()
    if not isinstance(calls, (list, tuple)):
        raise InvalidMessageError("tool_calls must be a list")
    content = raw.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise InvalidMessageError(f"content must be a string, a list of parts or null, "
                                  f"not {type(content).__name__}")
    extra = {key: value for key, value in raw.items()
             if key not in _MODELLED or (key in _NULLABLE and not value)}
    fields: dict[str, Any] = {
        "role": raw["role"], "content": content, "name": raw.get("name") or None,
        "tool_calls": tuple(tool_call_from(call) for call in calls),
        "tool_call_id": raw.get("tool_call_id") or None, "extra": extra or None,
        "meta": raw.get("meta")}
    if raw.get("id") is not None:
        fields["id"] = raw["id"]
    return Message(**fields)


def from_sdk_object(obj: Any) -> Message:
    """An OpenAI SDK message object (``resp.choices[0].message``), read exactly as the SDK would
    send it back: its fields that were set, in JSON form."""
    try:
        raw = obj.model_dump(exclude_unset=True, mode="json",
                             exclude=getattr(obj, "__api_exclude__", None))
    except TypeError:  # a model_dump() without pydantic's options
        raw = obj.model_dump()
    return from_openai(raw)


_LANGCHAIN_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool",
                    "function": "function"}
LANGCHAIN_TYPES = {"system": "system", "developer": "system", "user": "human",
                   "assistant": "ai", "tool": "tool", "function": "function"}
_CHAT_ROLES = {"human": "user", "ai": "assistant", **{role: role for role in ROLES}}
_LANGCHAIN_MODELLED = ("content", "id", "name", "tool_calls", "tool_call_id", "type")


def from_langchain(obj: Any) -> Message:
    """Any langchain-core message (chunks, ``ChatMessage`` and ``FunctionMessage`` included);
    duck-typed. What we do not model (``additional_kwargs``, ``response_metadata``, the class)
    is kept in ``meta`` so that ``integrations.langchain.to_langchain`` rebuilds the same object.
    Fields are read from the instance dict: pydantic's attribute fallback is slow on misses."""
    data, kind = vars(obj), obj.type
    base = kind.removesuffix("MessageChunk").lower() if isinstance(kind, str) else None
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


def as_message(obj: Any) -> Message:
    """Accept a Message, an OpenAI dict or SDK object, a LangChain or a LlamaIndex message."""
    if isinstance(obj, Message):
        return obj
    if isinstance(obj, Mapping):
        return from_openai(obj)
    if hasattr(obj, "type") and hasattr(obj, "content") and hasattr(obj, "additional_kwargs"):
        return from_langchain(obj)
    if hasattr(obj, "blocks") and hasattr(obj, "role"):
        from .integrations.llamaindex import from_llamaindex

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


def to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """A list of OpenAI chat dicts, ready for ``client.chat.completions.create(messages=...)``."""
    return [message.to_openai() for message in messages]


# -- tool-call pairing ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Pending:
    """The results a conversation still owes: the calls of the assistant message at ``index``
    (tool call ids, or the name of a legacy ``function_call``)."""

    index: int = -1
    calls: frozenset[str] = frozenset()
    function: str | None = None

    def __bool__(self) -> bool:
        return bool(self.calls) or self.function is not None

    def after(self, message: Message, index: int) -> Pending:
        """What is pending once ``message`` (at ``index``) follows; no checking."""
        if message.role == "tool":
            return Pending(self.index, self.calls - {message.tool_call_id or ""}, self.function)
        function = message.function_call
        if message.role != "assistant" or (not message.tool_calls and function is None):
            return _NOTHING_PENDING
        return Pending(index, frozenset(call.id for call in message.tool_calls),
                       function.get("name") if function else None)


_NOTHING_PENDING = Pending()


def check_next(pending: Pending, message: Message, index: int) -> Pending:
    """What is pending after ``message`` (at ``index``), or :class:`InvalidMessageError` if it
    breaks the pairing providers enforce: every tool result directly follows the assistant
    message that made the call, and every call has its result before the next other message.
    Calls still pending at the end of a conversation are allowed (their results may follow)."""
    if message.role == "tool" and message.tool_call_id not in pending.calls:
        raise InvalidMessageError(
            f"message {index}: tool result for call {message.tool_call_id!r} does not answer a "
            f"pending call of the assistant message before it (pending: "
            f"{sorted(pending.calls) or 'none'})")
    if message.role == "function" and pending.function != message.name:
        raise InvalidMessageError(
            f"message {index}: function result {message.name!r} does not answer a pending "
            "function_call of the assistant message before it")
    if message.role not in RESULT_ROLES and pending:
        missing = sorted(pending.calls) or [pending.function]
        raise InvalidMessageError(
            f"message {pending.index}: tool call(s) {missing} still need their tool results "
            f"before the {message.role} message {index}")
    return pending.after(message, index)


def check_conversation(messages: Sequence[Message], positions: Sequence[int] | None = None) -> None:
    """Raise :class:`InvalidMessageError` if ``messages`` break tool-call pairing; errors name
    ``positions[k]`` (the index in the caller's input) for message ``k``."""
    pending = Pending()
    for k, message in enumerate(messages):
        pending = check_next(pending, message, k if positions is None else positions[k])


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
