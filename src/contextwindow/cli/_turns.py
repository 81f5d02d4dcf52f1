"""A chat turn is stored with its reply or not at all.

A memory writes every message to its store as it is added, but the user's message has to be in
the memory before the reply exists (the view the model answers is built from it). So the chat's
memory writes through :class:`TurnStore`: what a turn writes (its messages, a summary fold,
embeddings) waits in the wrapper and reaches the real store in one ``append_many`` on
:meth:`~TurnStore.commit`, after the reply; a turn that fails or is interrupted is dropped by
:meth:`~TurnStore.rollback`, and the history stays user / assistant alternating.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..messages import Message, Summary
from ..retrieval.text import Hit
from ..stores import Store


class TurnStore:
    """A :class:`~contextwindow.stores.Store` over ``inner`` that holds one turn's writes until
    :meth:`commit`. Reads see the held writes after the stored ones; search sees only what is
    stored (the held turn is the newest, never one to recall)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._messages: dict[str, list[Message]] = {}
        self._summaries: dict[str, Summary] = {}
        self._vectors: dict[tuple[str, str], dict[int, bytes]] = {}

    def commit(self) -> None:
        """Write the held turn to the real store: its messages all or none, then the rest."""
        for session, messages in self._messages.items():
            self.inner.append_many(session, messages)
        for session, summary in self._summaries.items():
            self.inner.save_summary(session, summary)
        for (session, model), vectors in self._vectors.items():
            self.inner.save_vectors(session, model, vectors)
        self.rollback()

    def rollback(self) -> None:
        """Forget the held turn (the memory must :meth:`~contextwindow.memory.Memory.reload`)."""
        self._messages, self._summaries, self._vectors = {}, {}, {}

    def append(self, session: str, message: Message) -> None:
        self._messages.setdefault(session, []).append(message)

    def append_many(self, session: str, messages: list[Message]) -> None:
        self._messages.setdefault(session, []).extend(messages)

    def load(self, session: str, start: int = 0) -> list[Message]:
        return (self.inner.load(session) + self._messages.get(session, []))[start:]

    def sessions(self) -> list[str]:
        stored = self.inner.sessions()
        return stored + [s for s in self._messages if s not in stored]

    def delete(self, session: str) -> None:
        self._messages.pop(session, None)
        self._summaries.pop(session, None)
        self.inner.delete(session)

    def save_summary(self, session: str, summary: Summary) -> None:
        self._summaries[session] = summary

    def load_summary(self, session: str) -> Summary | None:
        return self._summaries.get(session) or self.inner.load_summary(session)

    def search(self, session: str, query: str, limit: int = 20) -> list[Hit]:
        return self.inner.search(session, query, limit)

    def save_vectors(self, session: str, model: str, vectors: Mapping[int, bytes]) -> None:
        self._vectors.setdefault((session, model), {}).update(vectors)

    def load_vectors(self, session: str, model: str) -> dict[int, bytes]:
        return {**self.inner.load_vectors(session, model),
                **self._vectors.get((session, model), {})}

    def close(self) -> None:
        self.inner.close()
