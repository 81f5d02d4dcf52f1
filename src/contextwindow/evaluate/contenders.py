"""The contenders of the evidence benchmark (:mod:`.evidence`): one way each to build the
context for a question asked after a long chat, at a token budget.

* the project's memories, through :func:`memory_view`: the newest turns (TokenBuffer), the
  first exchange pinned plus the newest (SinkWindow), a running KeyFacts summary plus the
  newest (SummaryBuffer);
* :func:`bm25_top_k` -- what a user writes in forty lines with ``rank-bm25``: half the budget
  for the newest messages, the rest for older messages ranked by BM25 on the question, those
  first (in conversation order), then the newest, then the question;
* :func:`llamaindex_vector_memory` -- llama-index-core's ``Memory`` with a
  ``VectorMemoryBlock`` on the same local embedding model (``embed`` extra), its own
  in-memory vector store and our counter's tokenizer; its counts leave out message framing
  and the block template, so its contexts are checked and reported, not enforced.

A memory is fed the history once per budget; each question then gets a copy of that state
(a new memory over a copy of the store, or of llama-index's active queue and vectors) with the
question added, which is what feeding history + question gives, at a fraction of the cost.
``rank-bm25`` and ``llama-index-core`` are imported on first use (dev extra).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..memory import (
    Memory,
    RecallMemory,
    SinkWindowMemory,
    SummaryBufferMemory,
    TokenBufferMemory,
)
from ..messages import Message
from ..stores import InMemoryStore
from ..summarize import KeyFactsSummarizer
from ..tokens import TokenCounter
from .evidence import Contender

__all__ = ["CONTENDERS", "bm25_top_k", "llamaindex_vector_memory", "memory_view",
           "recall_hybrid", "recall_lexical"]

MemoryFactory = Callable[..., Memory]  # (budget, counter=..., store=..., session=...)
_SESSION = "longchat"


def memory_view(factory: MemoryFactory) -> Contender:
    """A contender from a memory factory: the history fed once per budget, then per question
    a memory over a copy of the store (history and summary) with the question added."""
    fed: dict[int, tuple[list[Message], Memory]] = {}

    def build(history: list[Message], question: Message, budget: int,
              counter: TokenCounter) -> list[Message]:
        if budget not in fed or fed[budget][0] is not history:
            memory = factory(budget, counter=counter, session=_SESSION)
            for message in history:
                memory.add_message(message)
            fed[budget] = (history, memory)
        state = fed[budget][1]
        store = InMemoryStore()
        store.append_many(_SESSION, state.history())
        summary = state.store.load_summary(_SESSION)
        if summary is not None:
            store.save_summary(_SESSION, summary)
        embedder = getattr(state, "embedder", None)
        if embedder is not None:  # the history's vectors, computed once per budget
            state.messages()
            store.save_vectors(_SESSION, embedder.model_id,
                               state.store.load_vectors(_SESSION, embedder.model_id))
        fork = factory(budget, counter=counter, store=store, session=_SESSION)
        fork.add_message(question)
        return fork.messages()

    return Contender(build)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25_top_k(history: list[Message], question: Message, budget: int,
               counter: TokenCounter, *, newest_share: float = 0.5) -> list[Message]:
    """Older messages ranked by BM25 (rank-bm25's Okapi) on the question, then the newest
    messages, then the question: ``newest_share`` of the budget for the newest, the rest
    filled with the best-ranked older messages that fit."""
    from rank_bm25 import BM25Okapi

    room = budget - counter.overhead(has_system=False) - counter.count_message(question)
    start, used = len(history), 0
    while start > 0 and used + counter.count_message(history[start - 1]) <= room * newest_share:
        start -= 1
        used += counter.count_message(history[start])
    older = history[:start]
    chosen: list[int] = []
    if older:
        scores = BM25Okapi([_words(m.content or "") for m in older]).get_scores(
            _words(question.content or ""))
        for k in sorted(range(len(older)), key=lambda k: -scores[k]):
            cost = counter.count_message(older[k])
            if scores[k] <= 0 or used + cost > room:
                continue
            chosen.append(k)
            used += cost
    return [older[k] for k in sorted(chosen)] + history[start:] + [question]


def llamaindex_vector_memory(embedder: Any = None, *, top_k: int = 2,
                             flush_share: float = 0.1) -> Contender:
    """llama-index's ``Memory`` (token limit = the budget, flushes of ``flush_share`` of it)
    with a ``VectorMemoryBlock`` (``top_k`` flushed batches, queried with its default window
    of recent messages), the question put and then ``get()``, as its agents do."""
    from . import _llamaindex_memory

    return Contender(_llamaindex_memory.builder(embedder, top_k=top_k, flush_share=flush_share),
                     checked=False)


def recall_lexical(share: float) -> Contender:
    """:class:`~contextwindow.memory.RecallMemory` (lexical) giving recalled turns ``share`` of
    the budget (the default is :data:`~contextwindow.memory.recall.DEFAULT_RECALL_SHARE`)."""

    def factory(budget: int, **options: Any) -> Memory:
        return RecallMemory(budget, recall_tokens=max(1, int(budget * share)), **options)

    return memory_view(factory)


def recall_hybrid(embedder: Any) -> Contender:
    """:class:`~contextwindow.memory.RecallMemory` with BM25 fused with ``embedder``'s cosine
    similarity (reciprocal rank)."""

    def factory(budget: int, **options: Any) -> Memory:
        return RecallMemory(budget, ranker="hybrid", embedder=embedder, **options)

    return memory_view(factory)


def _summary_keyfacts(budget: int, **options: Any) -> Memory:
    return SummaryBufferMemory(budget, KeyFactsSummarizer(), on_error="trim", **options)


CONTENDERS: dict[str, Contender] = {
    "newest turns (TokenBuffer)": memory_view(TokenBufferMemory),
    "first exchange + newest (SinkWindow)": memory_view(SinkWindowMemory),
    "summary + KeyFacts (SummaryBuffer)": memory_view(_summary_keyfacts),
    "BM25 top-k + newest (rank-bm25)": Contender(bm25_top_k),
    "recall, lexical (RecallMemory)": memory_view(RecallMemory),
}
"""The model-free contenders, in the order the benchmark reports them; the benchmark adds
:func:`llamaindex_vector_memory` when it has the embedding model."""
