"""An in-process BM25 index that grows one message at a time (InMemoryStore, RedisStore).

The formula is Lucene's BM25 (Lucene 8 and later; bm25s calls it ``method="lucene"``)::

    score(q, d) = sum over the distinct stems t of q found in d of
                  idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with ``tf`` the stem's count in ``d``, ``|d|`` the document's number of (non-stop-word)
words, ``N`` the number of documents and ``avgdl`` their mean length. Lucene's idf is never
negative, so a word found in most messages of a small session still counts a little (the
Robertson idf that SQLite's FTS5 uses is zero or below for a word in half the documents).

Postings are kept in typed arrays (12 bytes per posting), so a 100,000-message session costs
tens of megabytes, not hundreds. Not thread-safe: the stores call it under their locks.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from ..errors import ConfigError, StoreError
from ..messages import Message
from .text import Hit, index_terms, indexed_text, prune_terms, query_terms, stem

__all__ = ["LexicalIndex", "ranker"]


@dataclass
class LexicalIndex:
    """BM25 over documents keyed by an integer ``index`` (a message's position in its session).

    ``k1`` (term-frequency saturation) and ``b`` (length normalisation) default to the usual
    1.2 and 0.75. A document's terms are :func:`~contextwindow.retrieval.text.index_terms`
    (its words minus stop words, each stemmed with :func:`~contextwindow.retrieval.text.stem`);
    :meth:`search` stems its terms the same way, so "visiting" finds "visit".
    """

    k1: float = 1.2
    b: float = 0.75
    _postings: dict[str, tuple[array, array]] = field(default_factory=dict, init=False,
                                                       repr=False, compare=False)
    _lengths: dict[int, int] = field(default_factory=dict, init=False, repr=False,
                                     compare=False)
    _total: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k1) and self.k1 >= 0):
            raise ConfigError(f"k1 must be a finite number >= 0, not {self.k1!r}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"b must be between 0 and 1, not {self.b!r}")

    def __len__(self) -> int:
        """How many documents were added."""
        return len(self._lengths)

    def add(self, index: int, text: str) -> None:
        """Index ``text`` as document ``index`` (each index once)."""
        if index in self._lengths:
            raise StoreError(f"the recall index already holds message {index}")
        stems = index_terms(text)
        postings = self._postings
        for term, count in Counter(stems).items():
            posting = postings.get(term)
            if posting is None:
                posting = postings[term] = (array("q"), array("I"))
            posting[0].append(index)
            posting[1].append(count)
        self._lengths[index] = len(stems)
        self._total += len(stems)

    def search(self, terms: Iterable[str], limit: int = 20) -> list[Hit]:
        """The ``limit`` best documents for ``terms`` (as ``query_terms`` gives them; a stem
        given twice counts once, and a query over the work bound scores only the terms
        :func:`~contextwindow.retrieval.text.prune_terms` keeps): best score first, equal
        scores newest (highest index) first. Documents that contain none of the scored terms
        are not returned."""
        if limit <= 0 or not self._lengths:
            return []
        count = len(self._lengths)
        avgdl = self._total / count
        lengths = self._lengths
        k1, b, keep = self.k1, self.b, 1 - self.b
        scores: dict[int, float] = {}
        score = scores.get
        postings = self._postings
        frequencies = {term: len(postings[term][0]) if term in postings else 0
                       for term in dict.fromkeys(stem(term) for term in terms)}
        for term in prune_terms(frequencies, count):
            posting = postings[term]
            found = len(posting[0])
            idf = math.log(1 + (count - found + 0.5) / (found + 0.5))
            for index, tf in zip(*posting):  # the hot loop: one expression, locals only
                scores[index] = score(index, 0.0) + idf * (
                    tf / (k1 * (keep + b * lengths[index] / avgdl) + tf))
        best = heapq.nlargest(limit, scores.items(), key=itemgetter(1, 0))
        return [Hit(index, score) for index, score in best]


#: Candidates :func:`ranker` returns (the recall block is filled from these, best first).
RANKED = 64


def ranker(history: Sequence[Message]) -> Callable[[Message, int, int], list[int]]:
    """``rank(question, lo, hi)``: BM25 over ``history[lo:hi]``, indexed for the one call (a
    request that has no store behind it; :class:`~contextwindow.window.Fitter`'s default)."""

    def rank(question: Message, lo: int, hi: int) -> list[int]:
        index = LexicalIndex()
        for k in range(lo, hi):
            index.add(k, indexed_text(history[k]))
        terms = query_terms(indexed_text(question))
        return [hit.index for hit in index.search(terms, RANKED)]

    return rank
