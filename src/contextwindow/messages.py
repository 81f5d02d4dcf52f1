"""The one message type everything else works on, its OpenAI shape, and the tool-call pairing.

A :class:`Message` is immutable and hashable by content (its ``id`` is not compared), so a token
counter can cache a message's count and re-counting a long history costs one dict look-up each.

Nothing a caller gives is lost: a content list (text, images, audio...) is kept verbatim in
``parts`` (``content`` then holds its text, for summarizers and previews), provider fields we do
not model (``refusal``, ``annotations``, ``audio``, ``function_call``, future ones) are kept in
``extra`` and sent back as given, and framework data that is never sent to a provider (LangChain's
``response_metadata``, LlamaIndex's ``additional_kwargs``...) is kept in ``meta``. The message's
own shape is OpenAI's chat dict (:func:`from_openai`, :meth:`Message.to_openai`); the readers and
writers of other libraries' shapes are in :mod:`contextwindow.adapters`, one layer up.

:func:`check_next` is the one tool-call pairing check that ``trim``, the memories and the CLI
share: a provider rejects a conversation that breaks it with a 400.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidMessageError

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SYSTEM_ROLES = ("system", "developer")
RESULT_ROLES = ("tool", "function")  # messages that answer the assistant message before them
_MODELLED = ("role", "content", "name", "tool_calls", "tool_call_id", "id", "meta",
             "timestamp")
_NULLABLE = ("name", "tool_calls", "tool_call_id")  # kept in ``extra`` when given as null
#: Readers that moved to :mod:`contextwindow.adapters`; still importable here, with a warning.
_MOVED_TO_ADAPTERS = frozenset(
    {"as_message", "as_messages", "from_sdk_object", "from_langchain", "LANGCHAIN_TYPES"})


def __getattr__(name: str) -> Any:
    """The deprecated ``contextwindow.messages.as_message`` (and the other moved readers).

    The one import of a layer above, made only when an old name is used; the layers contract
    in pyproject.toml ignores exactly this import, so it goes when the aliases go."""
    if name not in _MOVED_TO_ADAPTERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import adapters

    warnings.warn(f"contextwindow.messages.{name} moved to contextwindow.adapters.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(adapters, name)


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
    ``content`` to the text of its text parts, joined by newlines. ``timestamp`` (optional,
    ISO 8601: a date or a date and time; a ``datetime``/``date`` is converted) says when it was
    said: stores keep it and recalled turns show it, because later questions are often about
    *when*. Like ``id`` it is not sent to a provider and not compared.
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
    timestamp: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.timestamp is not None:
            object.__setattr__(self, "timestamp", _iso_timestamp(self.timestamp))
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
        if self.timestamp is not None:
            record["timestamp"] = self.timestamp
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
        "meta": raw.get("meta"), "timestamp": raw.get("timestamp")}
    if raw.get("id") is not None:
        fields["id"] = raw["id"]
    return Message(**fields)


def _iso_timestamp(value: object) -> str:
    """``value`` as ISO 8601 text, checked; a ``datetime`` or ``date`` is formatted."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, str):
        try:
            datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise InvalidMessageError(f"timestamp must be an ISO 8601 date or date and time, not "
                              f"{value!r}")


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
        missing = sorted(pending.calls) if pending.calls else [pending.function]
        raise InvalidMessageError(
            f"message {pending.index}: tool call(s) {missing} still need their tool results "
            f"before the {message.role} message {index}")
    return pending.after(message, index)


def check_conversation(messages: Sequence[Message], positions: Sequence[int] | None = None) -> None:
    """Raise :class:`InvalidMessageError` if ``messages`` break tool-call pairing; errors name
    ``positions[k]`` (the index in the caller's input) for message ``k``."""
    pending = _NOTHING_PENDING
    for k, message in enumerate(messages):
        if not pending and message.role in _ASKING_NOTHING and not message.tool_calls and (
                message.extra is None):  # nothing owed, nothing asked: most messages
            continue
        pending = check_next(pending, message, k if positions is None else positions[k])


_ASKING_NOTHING = frozenset(ROLES) - frozenset(RESULT_ROLES)
"""Roles whose message, without tool calls or extra fields (a legacy ``function_call`` is an
extra field), leaves nothing pending: :func:`check_next` would return ``_NOTHING_PENDING``."""


SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
"""How a summary message starts, wherever it was made (a memory's stored summary, a fit's)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """A summary of history messages ``[start, end)`` (indices into the session's history)."""

    text: str
    start: int
    end: int

    def as_message(self) -> Message:
        """How the summary enters the context: a system message placed after the pinned head."""
        return Message(role="system", content=SUMMARY_PREFIX + self.text,
                       id=f"summary-{self.start}-{self.end}")
