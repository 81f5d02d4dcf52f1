"""The store protocol every backend follows, and the one encoding they all use.

A store holds many sessions; each session is an append-only, ordered list of messages plus at
most one summary. ``append`` is durable when it returns. Memories keep their own in-process view
and only ever append, so trimming and summarizing never delete stored history.

Every store also keeps a recall index of its messages: ``search`` ranks a session's messages by
their words (BM25 or the engine's closest equivalent; each store's docstring says how its index
stays consistent with the messages and which statistics it ranks with), and ``save_vectors`` /
``load_vectors`` keep embeddings per message for an optional dense ranking. A message's index
is its 0-based position in ``load(session)``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Protocol, runtime_checkable

from ..errors import InvalidMessageError, StoreError
from ..messages import Message, Summary, from_openai
from ..retrieval.text import Hit, indexed_text, query_terms

MAX_SESSION_LENGTH = 512
MAX_MODEL_LENGTH = 512


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

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        """The ``limit`` messages of ``session`` (never another session's) that best match the
        words of ``query``, best first. ``query`` is plain text, never query syntax: only its
        ``query_terms`` count, so a query of stop words only (or no words) finds nothing, and
        no text makes it raise."""

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        """Keep ``model``'s embedding (float32 bytes) of each message index given; a vector
        already kept for that message and model stays (a message's embedding never changes,
        so a retry or a second writer is harmless). ``delete`` removes them."""

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        """Every vector kept for ``session`` under ``model``, by message index."""

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


def search_terms(query: object, limit: object) -> list[str]:
    """What a store's ``search`` builds its query from: the query's terms (none when ``limit``
    is 0), after checking the argument types."""
    if not isinstance(query, str):
        raise StoreError(f"a search query must be a string, not {type(query).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise StoreError(f"limit must be an integer >= 0, not {limit!r}")
    return query_terms(query) if limit else []


def check_model(model: object) -> str:
    """An embedding model's name is kept like a session id: valid text, no NUL, not too long."""
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_LENGTH or any(
            c == "\x00" or "\ud800" <= c <= "\udfff" for c in model):
        raise StoreError(f"a model name must be valid text of 1 to {MAX_MODEL_LENGTH} "
                         f"characters without NUL, not {model!r}")
    return model


def check_vectors(model: object, vectors: object) -> list[tuple[int, bytes]]:
    """``save_vectors``' arguments as (index, bytes) rows in index order: indexes are integers
    >= 0, vectors are bytes."""
    check_model(model)
    if not isinstance(vectors, Mapping):
        raise StoreError(f"vectors must be a mapping of message index to bytes, not "
                         f"{type(vectors).__name__}")
    rows = []
    for index, data in vectors.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise StoreError(f"a vector's message index must be an integer >= 0, not {index!r}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"the vector of message {index} must be bytes, not "
                             f"{type(data).__name__}")
        rows.append((index, bytes(data)))
    return sorted(rows)


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


def backfill(rows: Iterable[tuple[int, str, str]]) -> Iterator[tuple[int, str, str, int]]:
    """Index rows for messages stored before the recall index existed: from (seq, session,
    data) in ``seq`` order to (seq, indexed text, session, position in its session). A corrupt
    message (which ``load`` reports) gets no text, so the positions after it stay right."""
    positions: dict[str, int] = {}
    for seq, session, data in rows:
        position = positions[session] = positions.get(session, -1) + 1
        try:
            text = indexed_text(decode_message(data))
        except StoreError:
            text = ""
        yield seq, text, session, position


def store_ranker(store: Store, session: str, candidates: int = 64
                 ) -> Callable[[Message, int, int], list[int]]:
    """``rank(question, lo, hi)`` by ``store``'s own index over ``session``: the stored
    messages in ``[lo, hi)``, best first (the recall mode of a session-backed fit)."""

    def rank(question: Message, lo: int, hi: int) -> list[int]:
        hits = store.search(session, indexed_text(question), candidates * 4)
        return [hit.index for hit in hits if lo <= hit.index < hi][:candidates]

    return rank
