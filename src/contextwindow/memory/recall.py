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
from ..summarize.facts import split_sentences
from ..trim import CachePolicy, pinned_count
from ..window import DEFAULT_RECALL_SHARE, RECALL_CANDIDATES, Context, recall_into
from .base import Memory, check_limits

__all__ = ["DEFAULT_RECALL_SHARE", "RANKERS", "RecallMemory"]

RANKERS = ("lexical", "hybrid")
#: Sentences of a message embedded for the dense ranking (a longer message's rest is not).
MAX_SENTENCES = 16
#: Reciprocal-rank fusion's constant (Cormack et al. 2009).
RRF_K = 60
#: How much less a question sentence ("What's a good name for a cat?") scores in the dense
#: ranking than a statement: a later question is answered by what was *said* ("we've had our
#: tabby Pixel for three years"), while an earlier question on the same topic is the closest
#: paraphrase and crowds the statement out. Cosine similarities of all-MiniLM-L6-v2 differ by
#: a few hundredths between close candidates, so 0.1 demotes a question below a statement
#: nearly as close, not below everything.
QUESTION_PENALTY = 0.1


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

    max_tokens: int  # always set: the recall share is a part of it

    def __init__(self, max_tokens: int, *, recall_tokens: int | None = None,
                 keep_first: int = 0, cache_policy: CachePolicy | None = None,
                 ranker: str = "lexical", embedder: Any = None, feedback: int = 1,
                 **options: Any) -> None:
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
        if feedback < 0:
            raise ConfigError(f"feedback must be >= 0, not {feedback}")
        self.feedback = feedback
        self.embedder = embedder if ranker == "hybrid" else None
        self._view: tuple[int, Context] | None = None
        self._vectors: dict[int, tuple[Any, Any]] = {}  # index -> (sentence vectors, penalties)
        super().__init__(**options)

    _view_reads_store = True  # the view searches the store's index

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
        """History indices in ``[lo, hi)``, best first, for ``question``: BM25, and with
        ``feedback`` a second BM25 round whose query adds the best hits' text (so "my
        godmother's dog" finds the turn naming her dog once a turn names the godmother),
        fused by reciprocal rank; with an embedder, fused with the dense ranking too."""
        query = indexed_text(question)
        rankings = [self._lexical(query, lo, hi)]
        if self.feedback and rankings[0]:
            best = " ".join(indexed_text(self._history[k]) for k in rankings[0][:self.feedback])
            rankings.append(self._lexical(f"{query} {best}", lo, hi))
        if self.embedder is not None:
            rankings.append(self._dense(self.embedder, query, lo, hi))
        return rankings[0] if len(rankings) == 1 else fuse(*rankings)

    def _lexical(self, query: str, lo: int, hi: int) -> list[int]:
        """The best :data:`RECALL_CANDIDATES` in ``[lo, hi)``: the store returns as many more
        as there are messages outside it (the pinned head and the window), no more (each hit
        returned is a row the store reads)."""
        outside = lo + len(self._history) - hi
        hits = self.store.search(self.session, query, RECALL_CANDIDATES + outside)
        return [hit.index for hit in hits if lo <= hit.index < hi][:RECALL_CANDIDATES]

    def _dense(self, embedder: Any, query: str, lo: int, hi: int) -> list[int]:
        """Indices in ``[lo, hi)`` by cosine similarity to ``query``: a message scores as its
        best sentence (a fact said in passing is one sentence of a longer message), a question
        sentence :data:`QUESTION_PENALTY` less. The sentence vectors are computed once per
        message and stored with it."""
        import numpy as np

        model = embedder.model_id
        if not self._vectors:
            stored = self.store.load_vectors(self.session, model)
            self._vectors = {k: self._scored(k, np.frombuffer(v, dtype=np.float32).reshape(
                -1, embedder.dimension)) for k, v in stored.items()}
        missing = [k for k in range(len(self._history)) if k not in self._vectors]
        if missing:
            pieces = [sentences(indexed_text(self._history[k])) for k in missing]
            rows = embedder.embed([text for piece in pieces for text in piece])
            found, at = {}, 0
            for k, piece in zip(missing, pieces, strict=True):
                found[k] = rows[at:at + len(piece)].astype(np.float32)
                at += len(piece)
            self.store.save_vectors(self.session, model,
                                    {k: rows.tobytes() for k, rows in found.items()})
            self._vectors.update((k, self._scored(k, rows)) for k, rows in found.items())
        if hi <= lo:
            return []
        target = embedder.embed([query])[0]
        vectors = self._vectors
        scores = np.array([float((vectors[k][0] @ target - vectors[k][1]).max(initial=-2.0))
                           for k in range(lo, hi)])
        best = np.argsort(-scores, kind="stable")[:RECALL_CANDIDATES]
        return [lo + int(k) for k in best]

    def _scored(self, index: int, rows: Any) -> tuple[Any, Any]:
        """A message's sentence vectors with what each sentence's score loses: a question
        :data:`QUESTION_PENALTY`, a statement nothing (vectors stored by a version that split
        the message otherwise: nothing either)."""
        import numpy as np

        asks = [piece.rstrip().endswith("?")
                for piece in sentences(indexed_text(self._history[index]))]
        if len(asks) != len(rows):
            asks = [False] * len(rows)
        return rows, np.array(asks, dtype=np.float32) * np.float32(QUESTION_PENALTY)


def sentences(text: str) -> list[str]:
    """The pieces a message is embedded as: its first :data:`MAX_SENTENCES` sentences (one
    piece for a message without sentence ends; a blank message embeds as one empty piece)."""
    found = split_sentences(text)[:MAX_SENTENCES]
    return found or [text]


def fuse(*rankings: list[int]) -> list[int]:
    """Reciprocal-rank fusion of best-first index lists (ties: the earlier message first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking):
            scores[index] = scores.get(index, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(scores, key=lambda index: (-scores[index], index))
