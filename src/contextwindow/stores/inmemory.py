"""A store in process memory: the default for memories, and the reference for the others."""

from __future__ import annotations

import threading

from ..errors import StoreError
from ..messages import Message, Summary
from .base import check_session, check_start


class InMemoryStore:
    """Sessions in a dict; thread-safe; gone when the process ends."""

    def __init__(self) -> None:
        self._messages: dict[str, list[Message]] = {}
        self._ids: dict[str, set[str]] = {}
        self._summaries: dict[str, Summary] = {}
        self._lock = threading.Lock()

    def append(self, session: str, message: Message) -> None:
        self.append_many(session, [message])

    def append_many(self, session: str, messages: list[Message]) -> None:
        check_session(session)
        new = [message.id for message in messages]
        with self._lock:
            ids = self._ids.setdefault(session, set())
            taken = ids.intersection(new) or {i for i in new if new.count(i) > 1}
            if taken:
                raise StoreError(f"message id {min(taken)!r} is already stored in this session")
            ids.update(new)
            self._messages.setdefault(session, []).extend(messages)

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

    def save_summary(self, session: str, summary: Summary) -> None:
        check_session(session)
        with self._lock:
            self._summaries[session] = summary

    def load_summary(self, session: str) -> Summary | None:
        check_session(session)
        with self._lock:
            return self._summaries.get(session)

    def close(self) -> None:
        """Nothing to release."""
