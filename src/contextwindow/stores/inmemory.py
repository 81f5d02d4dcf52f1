"""A store in process memory: the default for memories, and the reference for the others."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ..errors import StoreError
from ..messages import Message, Summary
from ..retrieval.lexical import LexicalIndex
from ..retrieval.text import Hit, indexed_text
from .base import check_model, check_session, check_start, check_vectors, search_terms
from .locks import LocalLocks


class InMemoryStore:
    """Sessions in a dict; thread-safe; gone when the process ends.

    Recall: one :class:`~contextwindow.retrieval.lexical.LexicalIndex` per session, added to
    under the same lock as the messages, so a search sees exactly the messages ``load`` sees.
    Its BM25 statistics (document count, lengths, document frequencies) are the session's own.
    """

    def __init__(self) -> None:
        self._messages: dict[str, list[Message]] = {}
        self._ids: dict[str, set[str]] = {}
        self._summaries: dict[str, Summary] = {}
        self._indexes: dict[str, LexicalIndex] = {}
        self._vectors: dict[str, dict[str, dict[int, bytes]]] = {}
        self._lock = threading.Lock()

    def append(self, session: str, message: Message) -> None:
        self.append_many(session, [message])

    def append_many(self, session: str, messages: list[Message]) -> None:
        check_session(session)
        new = [message.id for message in messages]
        texts = [indexed_text(message) for message in messages]
        with self._lock:
            ids = self._ids.setdefault(session, set())
            taken = ids.intersection(new) or {i for i in new if new.count(i) > 1}
            if taken:
                raise StoreError(f"message id {min(taken)!r} is already stored in this session")
            ids.update(new)
            stored = self._messages.setdefault(session, [])
            index = self._indexes.setdefault(session, LexicalIndex())
            for position, text in enumerate(texts, start=len(stored)):
                index.add(position, text)
            stored.extend(messages)

    def load(self, session: str, start: int = 0) -> list[Message]:
        check_session(session)
        with self._lock:
            return self._messages.get(session, [])[check_start(start):]

    def sessions(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys([*self._messages, *self._summaries]))

    def delete(self, session: str) -> None:
        check_session(session)
        with self._lock:
            self._messages.pop(session, None)
            self._ids.pop(session, None)
            self._summaries.pop(session, None)
            self._indexes.pop(session, None)
            self._vectors.pop(session, None)

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        check_session(session)
        terms = search_terms(query, limit)
        with self._lock:
            index = self._indexes.get(session)
            return index.search(terms, limit) if index is not None and terms else []

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        check_session(session)
        rows = check_vectors(model, vectors)
        with self._lock:
            kept = self._vectors.setdefault(session, {}).setdefault(model, {})
            for position, data in rows:
                kept.setdefault(position, data)

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        check_session(session)
        check_model(model)
        with self._lock:
            return dict(self._vectors.get(session, {}).get(model, {}))

    def save_summary(self, session: str, summary: Summary) -> None:
        check_session(session)
        with self._lock:
            self._summaries[session] = summary

    def load_summary(self, session: str) -> Summary | None:
        check_session(session)
        with self._lock:
            return self._summaries.get(session)

    def locks(self, *, ttl: float = 10.0) -> LocalLocks:
        """Session locks (:mod:`.locks`): this store lives in one process, so the caller's
        in-process lock is all there is (``ttl`` has nothing to bound)."""
        return LocalLocks()

    def close(self) -> None:
        """Nothing to release."""
