"""A memory that brings back what matters: the newest turns, plus older turns recalled from the
store by what the newest user message asks.

The view is the context assembler's (:mod:`contextwindow.window`) with one more part: a recall
block of at most ``recall_tokens`` (whole older turns, quoted with their dates, ranked by the
store's BM25 index on the newest user message, or fused with dense similarity under
``ranker="hybrid"``), placed right before the newest user message. The window of newest turns
keeps the rest of the budget, so its cut (and a :class:`~contextwindow.trim.CachePolicy`'s)
is the same whatever is recalled: the prompt up to the block is stable from turn to turn.
"""

from __future__ import annotations

from typing import Any

from ..errors import BudgetExceededError, ConfigError
from ..messages import Message
from ..retrieval.text import indexed_text
from ..trim import CachePolicy, pinned_count
from ..window import DEFAULT_RECALL_SHARE, RECALL_CANDIDATES, Context, recall_into
from .base import Memory, check_limits

__all__ = ["DEFAULT_RECALL_SHARE", "RANKERS", "RecallMemory"]

RANKERS = ("lexical", "hybrid")
#: Reciprocal-rank fusion's constant (Cormack et al. 2009).
RRF_K = 60


class RecallMemory(Memory):
    """The newest turns that fit ``max_tokens - recall_tokens``, after the pinned head, and
    older turns recalled into ``recall_tokens`` (default half the budget).

    ``ranker="lexical"`` (default) needs no model: the store's own index (SQLite FTS5,
    PostgreSQL full-text search, an in-process BM25 index for memory and Redis).
    ``ranker="hybrid"`` fuses it with cosine similarity of ``embedder`` vectors (e.g.
    :class:`~contextwindow.retrieval.dense.Embedder`, the ``embed`` extra) by reciprocal rank;
    each message is embedded once and its vector stored. When the whole history fits the
    budget, the view is all of it and nothing is recalled.
    """

    def __init__(self, max_tokens: int, *, recall_tokens: int | None = None,
                 keep_first: int = 0, cache_policy: CachePolicy | None = None,
                 ranker: str = "lexical", embedder: Any = None, **options: Any) -> None:
        check_limits(max_tokens, keep_first)
        if recall_tokens is None:
            recall_tokens = int(max_tokens * DEFAULT_RECALL_SHARE)
        if not 0 < recall_tokens < max_tokens:
            raise ConfigError(f"recall_tokens must be in (0, max_tokens={max_tokens}), not "
                              f"{recall_tokens}")
        if ranker not in RANKERS:
            raise ConfigError(f"unknown ranker {ranker!r}; expected one of {', '.join(RANKERS)}")
        if ranker == "hybrid" and embedder is None:
            raise ConfigError("ranker='hybrid' needs an embedder, e.g. embedder=Embedder() from "
                              "contextwindow.retrieval.dense (pip install 'contextwindow[embed]')")
        self.max_tokens = max_tokens
        self.recall_tokens = recall_tokens
        self.keep_first = keep_first
        self.cache_policy = cache_policy
        self.ranker = ranker
        self.embedder = embedder if ranker == "hybrid" else None
        self._view: tuple[int, Context] | None = None
        self._vectors: dict[int, Any] = {}
        super().__init__(**options)

    def reload(self) -> None:
        super().reload()
        self._view = None
        self._vectors = {}

    def plan(self) -> Context:
        """All of the history if it fits; else the window, and the recall block before the
        newest user message (computed once per history length)."""
        n = len(self._history)
        if self._view is not None and self._view[0] == n:
            return self._view[1]
        pinned = pinned_count(self._history, keep_system=self.keep_system,
                              keep_first=self.keep_first)
        context = self._keep_span(pinned, pinned)
        if context.tokens > self.max_tokens:
            context = self._recalled(pinned)
        self._view = (n, context)
        return context

    def _recalled(self, pinned: int) -> Context:
        overhead = self._overhead()
        try:
            window = self._assemble(self.max_tokens - self.recall_tokens, overhead, pinned)
        except BudgetExceededError:  # the newest turn needs the recall share too
            return self._assemble(self.max_tokens, overhead, pinned)
        return recall_into(self._history, window, self._rank, self.recall_tokens,
                           self.counter.count_message)

    def _rank(self, question: Message, lo: int, hi: int) -> list[int]:
        """History indices in ``[lo, hi)``, best first, for ``question``."""
        query = indexed_text(question)
        hits = self.store.search(self.session, query, RECALL_CANDIDATES * 4)
        lexical = [hit.index for hit in hits if lo <= hit.index < hi][:RECALL_CANDIDATES]
        if self.embedder is None:
            return lexical
        dense = self._dense(query, lo, hi)
        return fuse(lexical, dense)

    def _dense(self, query: str, lo: int, hi: int) -> list[int]:
        """Indices in ``[lo, hi)`` by cosine similarity to ``query`` (vectors stored once)."""
        import numpy as np

        model = self.embedder.model_id
        if not self._vectors:
            stored = self.store.load_vectors(self.session, model)
            self._vectors = {k: np.frombuffer(v, dtype=np.float32) for k, v in stored.items()}
        missing = [k for k in range(len(self._history)) if k not in self._vectors]
        if missing:
            rows = self.embedder.embed([indexed_text(self._history[k]) for k in missing])
            self.store.save_vectors(self.session, model,
                                    {k: row.astype(np.float32).tobytes()
                                     for k, row in zip(missing, rows, strict=True)})
            self._vectors.update(zip(missing, rows, strict=True))
        if hi <= lo:
            return []
        matrix = np.stack([self._vectors[k] for k in range(lo, hi)])
        scores = matrix @ self.embedder.embed([query])[0]
        best = np.argsort(-scores, kind="stable")[:RECALL_CANDIDATES]
        return [lo + int(k) for k in best]


def fuse(*rankings: list[int]) -> list[int]:
    """Reciprocal-rank fusion of best-first index lists (ties: the earlier message first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking):
            scores[index] = scores.get(index, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(scores, key=lambda index: (-scores[index], index))
