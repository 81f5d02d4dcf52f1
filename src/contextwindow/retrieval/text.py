"""What the recall index sees of a message, and how a question becomes search terms.

Every store ranks with its own engine (SQLite FTS5, PostgreSQL full-text search, the in-process
:class:`~contextwindow.retrieval.lexical.LexicalIndex`), but they all read the same text
(:func:`indexed_text`) and take the same terms (:func:`query_terms`). User text is never query
syntax: a question is reduced to its words (letters, digits and combining marks; case-folded,
NFKC-normalised), so quotes, ``NEAR(``, ``*``, ``:``, ``-``, ``OR``, parentheses or SQL in it
mean nothing, and a store builds its query only from these words. ``query_terms`` is
idempotent (``query_terms(" ".join(query_terms(q))) == query_terms(q)``), which is what makes
"the text's meaning is only its words" testable. The stores that know each term's document
frequency (SQLite, the in-process index) score only the terms :func:`prune_terms` keeps, so a
search's cost is bounded whatever the session's size.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import regex
import snowballstemmer

from ..messages import Message

__all__ = ["MAX_INDEXED_CHARS", "MAX_POSTINGS", "MAX_TERM_CHARS", "STOP_WORDS", "Hit",
           "index_terms", "indexed_text", "prune_terms", "query_terms", "stem", "words"]

#: A message's first 65,536 characters are indexed: a turn longer than that cannot be recalled
#: whole into a window anyway, and the cap bounds an add's cost on every store (PostgreSQL
#: refuses a tsvector over 1 MB, which a longer text of distinct words can reach).
MAX_INDEXED_CHARS = 65_536
#: A search's work bound: the summed document frequencies (postings) of the terms it scores.
#: Every engine scores each posting of each term (FTS5 ~2 us a posting, the in-process index
#: ~0.3 us), so this caps a search at a few milliseconds however large the session grows.
MAX_POSTINGS = 1_000
#: Longer words are no query terms (no store can match them usefully; PostgreSQL rejects query
#: words over 2,047 bytes).
MAX_TERM_CHARS = 100

_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the same for ASCII text, which needs no normalising
_UNSTORABLE = regex.compile(r"[\x00\ud800-\udfff]")  # no SQL text column holds these

_STOP_WORD_TEXT = """
a about above after again against ain all am an and any are aren as at be because been before
being below between both but by can couldn d did didn do does doesn doing don down during each
few for from further had hadn has hasn have haven having he her here hers herself him himself
his how i if in into is isn it its itself just ll m ma me mightn more most mustn my myself
needn no nor not now o of off on once only or other our ours ourselves out over own re s same
shan she should shouldn so some such t than that the their theirs them themselves then there
these they this those through to too under until up ve very was wasn we were weren what when
where which while who whom why will with won wouldn y you your yours yourself yourselves
"""
#: English function words: they match nearly every message, so a query keeps only the rest.
STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: ``index`` is the message's 0-based position in its session (as
    ``Store.load`` returns it), ``score`` its relevance (higher is better; comparable only
    within one result list)."""

    index: int
    score: float


def indexed_text(message: Message) -> str:
    """The text a message is found by: its ``name``, its content (the text parts of a content
    list included), and each tool call's function name and arguments (a legacy
    ``function_call`` too). NULs and lone surrogates become spaces (they are no word
    characters, and SQL text cannot hold them); only the first :data:`MAX_INDEXED_CHARS`
    characters count."""
    pieces = [message.name, message.content]
    pieces += [f"{call.name} {call.arguments}" for call in message.tool_calls]
    legacy = message.function_call
    if legacy is not None:
        pieces += [str(legacy.get("name", "")), str(legacy.get("arguments", ""))]
    text = "\n".join(piece for piece in pieces if piece)[:MAX_INDEXED_CHARS]
    return _UNSTORABLE.sub(" ", text)


def words(text: str) -> list[str]:
    """The words of ``text`` in order: case-folded, NFKC-normalised runs of letters, digits and
    combining marks (what FTS5's unicode61 tokenizer also calls token characters)."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    # NFKC before folding, and again after: case folding can leave text unnormalised, and
    # only the second pass makes ``words(" ".join(words(t))) == words(t)`` for every t.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _WORD.findall(folded)


def query_terms(text: str, limit: int = 32) -> list[str]:
    """The search terms of a question: its words without English stop words and words over
    :data:`MAX_TERM_CHARS` characters, each once, in first-seen order, at most ``limit``.
    Unstemmed: each engine stems with its own analyser (the in-process index with
    :func:`stem`)."""
    terms: dict[str, None] = {}
    for word in words(text):
        if len(terms) >= limit:
            break
        if word not in STOP_WORDS and len(word) <= MAX_TERM_CHARS:
            terms[word] = None
    return list(terms)


def prune_terms(frequencies: Mapping[str, int], documents: int,
                max_postings: int = MAX_POSTINGS) -> list[str]:
    """The terms a search scores, given each distinct term's document frequency (``df``) in
    ``documents`` indexed messages: all of them found when their postings fit
    ``max_postings``; else the rarest first while they fit, leaving out any term in half the
    documents or more, and always the rarest one.

    Why: a search costs in proportion to its terms' postings (every engine scores every
    match before it keeps the best), and a question's terms (or a feedback query's, a whole
    message added) include common words that match most of a large session. Those carry
    almost no weight: FTS5's Robertson idf ``ln((N - df + 0.5) / (df + 0.5))`` is <= 0 for
    ``df >= N / 2`` (floored at 1e-6), Lucene's ``ln(1 + (N - df + 0.5) / (df + 0.5))`` is
    at most ln 2 there against ~ln N for a word said once, so the rare terms decide the
    ranking and the common ones only its cost. Lucene's MoreLikeThis prunes its queries the
    same way (``maxQueryTerms``, ``maxDocFreq``). Terms not found (df 0) score nothing and
    are left out; the kept terms keep their order in ``frequencies``."""
    found = [term for term, df in frequencies.items() if df > 0]
    if sum(frequencies[term] for term in found) <= max_postings:
        return found
    kept: set[str] = set()
    postings = 0
    for term in sorted(found, key=frequencies.__getitem__):  # stable: equal dfs, query order
        df = frequencies[term]
        if kept and (postings + df > max_postings or 2 * df >= documents):
            break
        kept.add(term)
        postings += df
    return [term for term in found if term in kept]


_stemmers = threading.local()  # a snowball stemmer keeps state while it works: one per thread
_STEMS: dict[str, str] = {}  # word -> stem (a memo: cleared when full)
_MAX_STEMS = 1 << 17


def stem(word: str) -> str:
    """The English Snowball (Porter2) stem of a folded word, as PostgreSQL's ``english``
    configuration computes it: "visiting", "visited" and "visit" all give "visit".
    Memoised: the pure-Python stemmer takes ~0.1 ms a word, and a view stems each of its
    queries' words."""
    found = _STEMS.get(word)
    if found is None:
        stemmer = getattr(_stemmers, "english", None)
        if stemmer is None:
            stemmer = _stemmers.english = snowballstemmer.stemmer("english")
        if len(_STEMS) >= _MAX_STEMS:
            _STEMS.clear()
        found = _STEMS[word] = stemmer.stemWord(word)
    return found


def index_terms(text: str) -> list[str]:
    """What the recall index stores of a text (the in-process index, and SQLite's FTS5 table
    as words): its words' stems, stop words left out, in order (repeats kept: they are term
    frequencies)."""
    memo = _STEMS
    out = []
    for word in words(text):
        if word not in STOP_WORDS:
            out.append(memo.get(word) or stem(word))
    return out
