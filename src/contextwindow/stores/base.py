"""The store protocol every backend follows, and the one encoding they all use.

A store holds many sessions; each session is an append-only, ordered list of messages plus at
most one summary. ``append`` is durable when it returns. Memories keep their own in-process view
and only ever append, so trimming and summarizing never delete stored history.
"""

from __future__ import annotations

import importlib
import json
import sys
from types import ModuleType
from typing import Protocol, runtime_checkable

from ..errors import InvalidMessageError, StoreError
from ..messages import Message, Summary, from_openai

MAX_SESSION_LENGTH = 512


@runtime_checkable
class Store(Protocol):
    """What a memory needs from persistence. Small on purpose: Redis/PostgreSQL fit it too."""

    def append(self, session: str, message: Message) -> None:
        """Add ``message`` at the end of ``session``; durable when it returns."""

    def append_many(self, session: str, messages: list[Message]) -> None:
        """Add ``messages`` in order, all or none (one transaction); durable when it returns."""

    def load(self, session: str, start: int = 0) -> list[Message]:
        """Every message of ``session`` in the order appended (empty if unknown); from the
        ``start``-th on, so a reader that holds a prefix fetches only what was added since
        (a negative ``start`` counts from the end, as in ``messages[start:]``)."""

    def sessions(self) -> list[str]:
        """All session ids, in order of first write."""

    def delete(self, session: str) -> None:
        """Remove a session's messages and summary (an explicit user action, never trimming)."""

    def save_summary(self, session: str, summary: Summary) -> None:
        """Replace the session's summary."""

    def load_summary(self, session: str) -> Summary | None:
        """The session's summary, if any."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


def check_session(session: object) -> str:
    """Session ids are non-empty text of reasonable length that every backend can store."""
    if not isinstance(session, str) or not session:
        raise StoreError(f"a session id must be a non-empty string, not {session!r}")
    if len(session) > MAX_SESSION_LENGTH:
        raise StoreError(f"a session id may have at most {MAX_SESSION_LENGTH} characters")
    try:
        session.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError("a session id must be valid Unicode text (no lone surrogates)") from None
    if "\x00" in session:  # PostgreSQL text cannot hold NUL
        raise StoreError("a session id must not contain NUL characters")
    return session


def check_start(start: object) -> int:
    """``load``'s ``start``: an integer offset into the session (negative: from its end)."""
    if isinstance(start, bool) or not isinstance(start, int):
        raise StoreError(f"start must be an integer, not {start!r}")
    return start


def import_driver(module: str, *, store: str, needs: str, extra: str) -> ModuleType:
    """Import a backend's optional client library (``module`` may name a submodule; the top
    package is returned) when the store is opened, or raise a StoreError naming the extra
    that installs it, so ``import contextwindow.stores`` works without any driver."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise StoreError(f"{store} needs {needs}: pip install 'contextwindow[{extra}]'") from exc
    return sys.modules[module.partition(".")[0]]


def encode_message(message: Message) -> str:
    """JSON text of a message; ASCII-only so lone surrogates and NULs survive any backend."""
    return json.dumps(message.to_record(), ensure_ascii=True, separators=(",", ":"))


def decode_message(data: str | bytes) -> Message:
    try:
        return from_openai(json.loads(data))
    except (ValueError, InvalidMessageError) as exc:
        raise StoreError(f"a stored message is corrupt: {exc}") from exc


def encode_summary(summary: Summary) -> str:
    return json.dumps({"text": summary.text, "start": summary.start, "end": summary.end},
                      ensure_ascii=True)


def decode_summary(data: str | bytes) -> Summary:
    try:
        raw = json.loads(data)
        return Summary(text=raw["text"], start=int(raw["start"]), end=int(raw["end"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"a stored summary is corrupt: {exc}") from exc
