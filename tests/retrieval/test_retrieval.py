"""The recall index's text side: what is indexed, how a question becomes terms, and the
in-process BM25 index, whose scores equal the reference implementation's (bm25s, Lucene
variant) exactly."""

from __future__ import annotations

import dataclasses
import math

import bm25s
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contextwindow.errors import ConfigError, StoreError
from contextwindow.messages import Message, ToolCall
from contextwindow.retrieval.lexical import LexicalIndex
from contextwindow.retrieval.text import (
    MAX_INDEXED_CHARS,
    MAX_POSTINGS,
    STOP_WORDS,
    Hit,
    indexed_text,
    prune_terms,
    query_terms,
    stem,
    words,
)


# -- what is indexed -----------------------------------------------------------------------
def test_indexed_text_is_name_content_and_tool_calls() -> None:
    call = ToolCall("c1", "get_weather", '{"city": "Lyon"}')
    assert indexed_text(Message(role="assistant", tool_calls=(call,), content=None)) == (
        'get_weather {"city": "Lyon"}')
    assert indexed_text(Message(role="user", content="Hello there", name="ann")) == (
        "ann\nHello there")
    parts = [{"type": "text", "text": "first"}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "second"}]
    assert indexed_text(Message(role="user", content=parts)) == "first\nsecond"
    legacy = Message(role="assistant", content=None,
                     extra={"function_call": {"name": "lookup", "arguments": '{"q": 1}'}})
    assert indexed_text(legacy) == 'lookup\n{"q": 1}'


def test_indexed_text_drops_what_sql_text_cannot_hold_and_is_capped() -> None:
    assert indexed_text(Message(role="user", content="a\x00b\ud800c")) == "a b c"
    long = Message(role="user", content="word " * MAX_INDEXED_CHARS)
    assert indexed_text(long) == ("word " * MAX_INDEXED_CHARS)[:MAX_INDEXED_CHARS]


# -- query terms ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "terms"), [
    ('When did I VISIT "Paris"? -- NEAR(x* OR z)', ["visit", "paris", "near", "x", "z"]),
    ("'; DROP TABLE messages; --", ["drop", "table", "messages"]),
    ("col:term ^boost (unbalanced AND NOT", ["col", "term", "boost", "unbalanced"]),
    ("the of and or not", []),
    ("", []),
    ("🎉 *** ::: ---", []),
    ("Straße STRASSE strasse", ["strasse"]),  # case folding: one term
    ("ﬁle Ｐａｒｉｓ", ["file", "paris"]),  # NFKC: ligatures and full-width letters
    ("cafe\u0301 café", ["café"]),  # decomposed and composed are one word
    ("foo_bar 3.14 v2", ["foo", "bar", "3", "14", "v2"]),
    ("日本語のテキスト", ["日本語のテキスト"]),
    ("x" * 101 + " kept", ["kept"]),  # over MAX_TERM_CHARS: never a term
    ("paris Paris PARIS london", ["paris", "london"]),
])
def test_query_terms(text: str, terms: list[str]) -> None:
    assert query_terms(text) == terms


def test_query_terms_limit_counts_distinct_terms() -> None:
    text = " ".join(f"w{i}" for i in range(50))
    assert query_terms(text) == [f"w{i}" for i in range(32)]
    assert query_terms("alpha alpha beta gamma", limit=2) == ["alpha", "beta"]
    assert query_terms("alpha", limit=0) == []


def test_stop_words_are_folded_words() -> None:
    assert all(words(word) == [word] for word in STOP_WORDS)
    assert {"the", "and", "or", "not", "when", "did", "i"} <= STOP_WORDS


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=60))
@example("İstanbul ǅ ß ﬃ ¼ ⑴")  # folding and NFKC that change a word's length or split it
@example("a\u0301\u0327 \u0301 ٣ ০")
def test_query_terms_are_idempotent(text: str) -> None:
    """The meaning of a question is only its words: asking again with the terms alone gives
    the same terms (so a store's result for ``q`` and for ``" ".join(query_terms(q))`` is
    the same)."""
    terms = query_terms(text)
    assert query_terms(" ".join(terms)) == terms
    found = words(text)
    assert words(" ".join(found)) == found


def test_stem_is_english_snowball() -> None:
    assert [stem(w) for w in ("visiting", "visited", "visit", "visits")] == ["visit"] * 4
    assert [stem(w) for w in ("running", "generously", "café")] == ["run", "generous", "café"]


@pytest.mark.parametrize(("frequencies", "documents", "budget", "kept"), [
    # within the budget: every term found, in query order (a common one too)
    ({"a": 3, "missing": 0, "c": 900}, 1000, 1000, ["a", "c"]),
    # over it: the rarest first while they fit; equal dfs in query order
    ({"common": 600, "rare": 2, "mid": 300, "also": 300, "none": 0}, 1000, 500,
     ["rare", "mid"]),
    # over it: a term in half the documents or more is left out even if it fits
    ({"a": 10, "b": 50, "c": 60}, 100, 100, ["a"]),
    ({"a": 10, "b": 49, "c": 60}, 100, 100, ["a", "b"]),
    # the rarest is kept whatever it costs
    ({"x": 7000, "y": 5000}, 10_000, 1000, ["y"]),
    ({"x": 0}, 10, 1000, []),
    ({}, 0, 1000, []),
])
def test_prune_terms_keeps_the_rarest_within_the_budget(frequencies: dict[str, int],
                                                        documents: int, budget: int,
                                                        kept: list[str]) -> None:
    assert prune_terms(frequencies, documents, budget) == kept


def test_a_query_over_the_budget_scores_only_its_rare_terms() -> None:
    """``common`` is in every document: over the budget it is left out, so only the one
    document with ``rare`` is found (scored as if ``rare`` were asked alone)."""
    index = LexicalIndex()
    for k in range(MAX_POSTINGS):
        index.add(k, "common filler")
    index.add(MAX_POSTINGS, "rare common")
    assert index.search(["rare", "common"]) == index.search(["rare"])
    assert [hit.index for hit in index.search(["rare", "common"])] == [MAX_POSTINGS]
    assert len(index.search(["common"])) == 20  # alone, it is still the rarest term


def test_hit_is_a_frozen_value() -> None:
    hit = Hit(3, 1.5)
    assert (hit.index, hit.score) == (3, 1.5) and hit == Hit(3, 1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.index = 4  # type: ignore[misc]


# -- the BM25 index ------------------------------------------------------------------------
def test_score_by_hand() -> None:
    index = LexicalIndex()
    index.add(0, "paris")
    index.add(1, "london")
    # idf = ln(1 + (2 - 1 + 0.5) / (1 + 0.5)) = ln 2; tf = 1, |d| = avgdl = 1.
    assert index.search(["paris"]) == [Hit(0, math.log(2) * (1 / (1.2 + 1)))]
    assert index.search(["Visiting"]) == []


def test_stems_match_and_stop_words_do_not_count() -> None:
    index = LexicalIndex()
    index.add(0, "I visited Paris")
    index.add(1, "The weather is nice")
    assert [hit.index for hit in index.search(query_terms("visiting paris"))] == [0]
    assert index.search(["the", "is"]) == []  # not indexed: stop words


def test_ties_go_to_the_newest_and_limit_holds() -> None:
    index = LexicalIndex()
    for position in range(5):
        index.add(position, "same words here" if position != 2 else "other")
    hits = index.search(["words"], limit=3)
    assert [hit.index for hit in hits] == [4, 3, 1]
    assert len({hit.score for hit in hits}) == 1
    assert index.search(["words"], limit=0) == []
    assert len(index) == 5


def test_a_stem_asked_twice_counts_once() -> None:
    index = LexicalIndex()
    index.add(0, "visit")
    index.add(1, "museum")
    assert index.search(["visit", "visiting", "visits"]) == index.search(["visit"])


def test_each_index_once_and_parameters_are_checked() -> None:
    index = LexicalIndex()
    index.add(7, "text")
    with pytest.raises(StoreError, match="already holds message 7"):
        index.add(7, "again")
    for bad in ({"k1": -1.0}, {"k1": math.inf}, {"b": 1.5}, {"b": -0.1}):
        with pytest.raises(ConfigError):
            LexicalIndex(**bad)


VOCABULARY = ["paris", "london", "visit", "visiting", "museum", "thursday", "cat", "blue",
              "running", "run", "the", "and", "zebra", "quartz"]
documents = st.lists(st.lists(st.sampled_from(VOCABULARY), max_size=12).map(" ".join),
                     min_size=1, max_size=40)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(docs=documents, query=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=5),
       k1=st.sampled_from([1.2, 0.9, 2.0]), b=st.sampled_from([0.75, 0.0, 1.0, 0.4]))
def test_scores_equal_the_reference_bm25_exactly(docs: list[str], query: list[str], k1: float,
                                                 b: float) -> None:
    """bm25s with ``method="lucene"`` (float64), fed the same stemmed words, gives the very
    same float for every document (those with no query word: not returned, 0 there)."""
    index = LexicalIndex(k1=k1, b=b)
    for position, text in enumerate(docs):
        index.add(position, text)
    tokens = [[stem(word) for word in words(text) if word not in STOP_WORDS] for text in docs]
    expected = [0.0] * len(docs)
    if any(tokens):  # bm25s cannot index a corpus without a word
        reference = bm25s.BM25(k1=k1, b=b, method="lucene", dtype="float64")
        reference.index(tokens, show_progress=False)
        terms = list(dict.fromkeys(stem(term) for term in query_terms(" ".join(query))))
        known = [term for term in terms if term in reference.vocab_dict]
        if known:
            expected = reference.get_scores(known).tolist()
    got = [0.0] * len(docs)
    hits = index.search(query_terms(" ".join(query)), limit=len(docs))
    for hit in hits:
        got[hit.index] = hit.score
    assert got == expected
    assert [hit.index for hit in hits] == sorted(
        (i for i, score in enumerate(expected) if score > 0),
        key=lambda i: (-expected[i], -i))
