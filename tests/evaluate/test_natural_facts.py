"""The natural-facts recall benchmark: seeded, judged on the latest value, fair to every memory."""

from __future__ import annotations

import pytest

from contextwindow.errors import ConfigError
from contextwindow.evaluate.natural_facts import (
    NaturalFact,
    answerable,
    natural_conversation,
    natural_recall,
)
from contextwindow.evaluate.recall import context_text, default_memories, fact_in_text
from contextwindow.samples import sample_conversation
from contextwindow.tokens import TokenCounter

COUNTER = TokenCounter.approximate()
BASE = sample_conversation(40, seed=2)


def test_the_judge_wants_the_latest_value_last() -> None:
    moved = NaturalFact("meeting_day", "Which day?", "Thursday", stale="Tuesday")
    assert answerable(moved, "the architect on Tuesday ... actually, make that Thursday")
    assert answerable(moved, "make that Thursday")  # the correction alone is enough
    assert not answerable(moved, "Thursday? no: Tuesday")  # the stale value is said last
    assert not answerable(moved, "the architect on Tuesday")
    assert not answerable(moved, "Thursdays are busy")  # whole words only
    kept = NaturalFact("hobby", "Unwind?", "pottery")
    assert answerable(kept, "I do pottery") and not answerable(kept, "I do Pottery")


def test_the_conversation_is_seeded_and_every_value_is_planted_by_it() -> None:
    conversation, facts = natural_conversation(BASE, 8, 3, seed=5)
    again, same = natural_conversation(BASE, 8, 3, seed=5)
    assert (conversation, facts) == (again, same)
    assert natural_conversation(BASE, 8, 3, seed=6)[1] != facts
    assert [fact.corrected for fact in facts] == [True] * 3 + [False] * 5
    assert len({fact.topic for fact in facts}) == 8
    assert len(conversation) == len(BASE) + 2 * (8 + 3)  # each said fact is a turn + an ack
    base_text = context_text(BASE)
    for fact in facts:
        assert not fact_in_text(fact.answer, base_text)
        if fact.corrected:
            assert not fact_in_text(fact.stale, base_text)
    assert all(answerable(fact, context_text(conversation)) for fact in facts)


def test_corrections_come_after_the_fact_they_correct() -> None:
    conversation, facts = natural_conversation(BASE, 10, 4, seed=1)
    texts = [message.content or "" for message in conversation]
    for fact in facts[:4]:
        said = next(i for i, t in enumerate(texts) if fact_in_text(fact.stale, t))
        corrected = next(i for i, t in enumerate(texts) if fact_in_text(fact.answer, t))
        assert said < corrected


def test_every_memory_is_judged_on_its_final_context() -> None:
    conversation, facts = natural_conversation(BASE, 6, 2, seed=0)
    rows = natural_recall(default_memories(600, counter=COUNTER), conversation, facts)
    by_name = {row.name: row for row in rows}
    assert list(by_name) == ["Buffer", "Window(k=4)", "TokenBuffer", "SinkWindow(keep_first=2)",
                             "Recall", "SummaryBuffer(KeyFacts)"]
    assert by_name["Recall"].tokens <= 600
    assert by_name["Buffer"].answered == (True,) * 6
    assert by_name["Buffer"].messages == len(conversation)
    assert by_name["Window(k=4)"].answered == (False,) * 6  # all facts are early
    assert by_name["TokenBuffer"].tokens <= 600
    assert by_name["SummaryBuffer(KeyFacts)"].summarizer_calls >= 1


def test_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        natural_conversation(BASE, 3, 4)
    with pytest.raises(ConfigError):
        natural_conversation(BASE, 11, 1)
