"""The long-chat generator, the evidence metric and the benchmark's contenders."""

from __future__ import annotations

import datetime
import zlib
from collections import Counter

import numpy as np
import pytest

from contextwindow.errors import BudgetExceededError, ConfigError
from contextwindow.evaluate.contenders import (
    CONTENDERS,
    bm25_top_k,
    llamaindex_vector_memory,
    memory_view,
    recall_lexical,
)
from contextwindow.evaluate.evidence import (
    Contender,
    answered,
    evidence_recall,
    rendered,
    score,
    shares,
)
from contextwindow.evaluate.longchat import (
    DEFAULT_QUESTIONS,
    LongChat,
    Question,
    format_day,
    generate,
    mentions,
)
from contextwindow.evaluate.longchat_facts import KINDS
from contextwindow.memory import SummaryBufferMemory, TokenBufferMemory, default_counter
from contextwindow.messages import Message
from contextwindow.summarize import KeyFactsSummarizer

SMALL = {"single": 3, "multi": 3, "temporal": 3, "updated": 3}


@pytest.fixture(scope="module")
def chat() -> LongChat:
    return generate(7)


@pytest.fixture(scope="module")
def small() -> LongChat:
    return generate(11, sessions=30, questions=SMALL)


# --- the generator ---------------------------------------------------------------------------


def test_same_seed_same_chat_other_seed_other_chat() -> None:
    first, again = generate(3, sessions=25, questions=SMALL), generate(3, sessions=25,
                                                                        questions=SMALL)
    assert first.to_dict() == again.to_dict()
    other = generate(4, sessions=25, questions=SMALL)
    assert [m.content for m in other.messages] != [m.content for m in first.messages]


def test_shape_ids_dates_and_roles(chat: LongChat) -> None:
    ids = [m.id for m in chat.messages]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "s000.00" and ids[-1].startswith("s149.")
    days = [m.timestamp for m in chat.messages]
    assert days == sorted(days) and len(set(days)) == 150  # one date per session, increasing
    assert [m.role for m in chat.messages] == ["user", "assistant"] * (len(ids) // 2)
    assert 1_200 < len(chat.messages) < 1_900


def test_every_kind_asked_as_requested(chat: LongChat) -> None:
    assert Counter(q.kind for q in chat.questions) == Counter(DEFAULT_QUESTIONS)
    assert set(KINDS) == set(DEFAULT_QUESTIONS)
    assert len({q.id for q in chat.questions}) == len(chat.questions) == 42
    with pytest.raises(ConfigError, match="unknown question kind"):
        generate(0, sessions=5, questions={"trivia": 1})
    with pytest.raises(ConfigError, match="ask for fewer"):
        generate(0, sessions=5, questions={"single": 40})


def test_evidence_exists_and_says_the_value_nowhere_else(chat: LongChat) -> None:
    for q in chat.questions:
        assert q.evidence == tuple(sorted(q.evidence))
        assert len(q.evidence) == (1 if q.kind in ("single", "temporal") else 2)
        said = [chat.message(e) for e in q.evidence]
        assert all(m.role == "user" for m in said)
        if q.topic.startswith("event:"):  # answered by the session's date
            day = datetime.date.fromisoformat(said[0].timestamp)
            assert q.values == (q.answer,) == (format_day(day),)
            continue
        for value in q.values:
            assert any(mentions(value, m.content) for m in said), (q, value)
            others = [m for m in chat.messages if m.id not in q.evidence]
            assert not any(mentions(value, m.content) for m in others), (q, value)
        assert not any(mentions(value, q.text) for value in q.values)


def test_multi_fact_needs_both_turns(chat: LongChat) -> None:
    for q in (q for q in chat.questions if q.kind == "multi"):
        first, second = (chat.message(e).content for e in q.evidence)
        if q.topic.startswith("list:"):  # one value each
            assert len(q.values) == 2 and q.answer == " and ".join(q.values) or \
                q.answer == " and ".join(reversed(q.values))
            assert [mentions(v, first) for v in q.values].count(True) == 1
        else:  # a bridge: the relation in one turn, the value in the other
            (value,) = q.values
            assert mentions(value, first) != mentions(value, second)


def test_corrections_make_the_latest_value_the_answer(chat: LongChat) -> None:
    updated = [q for q in chat.questions if q.kind == "updated"]
    assert len(updated) == 10
    for q in updated:
        original, correction = (chat.message(e) for e in q.evidence)
        assert q.stale is not None and q.values == (q.answer,)
        assert mentions(q.stale, original.content) and not mentions(q.answer, original.content)
        assert mentions(q.answer, correction.content)
        sessions = [int(e[1:4]) for e in q.evidence]
        assert sessions[1] - sessions[0] >= 15  # a tenth of the chat later, at least


def test_questions_are_not_copies_of_their_evidence(chat: LongChat) -> None:
    for q in chat.questions:
        asked = q.text.rstrip("?").lower()
        assert all(asked not in chat.message(e).content.lower() for e in q.evidence)


def test_round_trips_through_json_and_refuses_unknown_evidence(small: LongChat) -> None:
    again = LongChat.from_dict(small.to_dict())
    assert again.to_dict() == small.to_dict()
    assert again.messages[5].timestamp == small.messages[5].timestamp
    data = small.to_dict()
    data["questions"][0]["evidence"] = ["s999.00"]
    with pytest.raises(ConfigError, match="s999.00"):
        LongChat.from_dict(data)


# --- the metric ------------------------------------------------------------------------------


def _tiny() -> tuple[LongChat, list[Message]]:
    said = ["we drive an old Volvo", "how do I descale a kettle?", "my sister Ines is here",
            "Ines just qualified as a florist", "we sold the Volvo and bought a Kia",
            "finished the book"]
    messages = [Message(role="user", content=text, id=f"m{k}", timestamp=f"2023-05-0{k + 1}")
                for k, text in enumerate(said)]
    questions = [
        Question("a", "single", "t", "Who is my sister?", "Ines", ("Ines",), ("m2",)),
        Question("b", "multi", "t", "What does my sister do?", "florist", ("florist",),
                 ("m2", "m3")),
        Question("c", "updated", "t", "Which car?", "Kia", ("Kia",), ("m0", "m4"), "Volvo"),
        Question("d", "temporal", "t", "When did I finish the book?", "6 May 2023",
                 ("6 May 2023",), ("m5",)),
    ]
    return LongChat(messages, questions), messages


def test_metric_on_a_hand_made_chat() -> None:
    chat, m = _tiny()
    counter = default_counter()
    recap = Message(role="system", content="Earlier: " + m[3].content + "!")  # quoted whole
    contexts = {"a": [m[2]], "b": [recap], "c": [m[4]], "d": [m[1]]}
    scores = [score(chat, q, contexts[q.id], counter, 100) for q in chat.questions]
    assert [(s.found, s.evidence, s.answer) for s in scores] == [
        (1, 1, True), (1, 2, True), (1, 2, True), (0, 1, False)]
    got = shares(scores, KINDS)
    assert got["all"] == {"evidence": 0.5, "complete": 0.25, "answer": 0.75, "questions": 4}
    assert got["multi"]["evidence"] == 0.5 and got["single"]["evidence"] == 1.0
    assert got["temporal"] == {"evidence": 0.0, "complete": 0.0, "answer": 0.0, "questions": 1}
    # the date of a kept turn is what answers "when"
    assert score(chat, chat.questions[3], [m[5]], counter, 100).answer
    assert rendered([m[5]]) == "[6 May 2023] finished the book"
    assert scores[0].tokens == counter.count_messages([m[2]])


def test_over_budget_raises_unless_reported() -> None:
    chat, m = _tiny()
    counter = default_counter()
    tokens = counter.count_messages(m)
    with pytest.raises(BudgetExceededError, match="over the budget of 10"):
        score(chat, chat.questions[0], m, counter, 10)
    reported = score(chat, chat.questions[0], m, counter, 10, checked=False)
    assert reported.tokens == tokens and reported.over_budget(10)


def test_a_reply_is_correct_when_it_gives_every_value() -> None:
    when = Question("d", "temporal", "t", "When?", "8 May 2023", ("8 May 2023",), ("m5",))
    assert [answered(when, reply) for reply in (
        "On 8 May 2023.", "May 8th", "the 8th of May", "18 May 2023", "May 18", "May 2023",
        "8 March")] == [True, True, True, False, False, False, False]
    both = Question("b", "multi", "t", "Which?", "Lisbon and Ghent", ("Lisbon", "Ghent"),
                    ("m1", "m2"))
    assert answered(both, "ghent, then Lisbon") and not answered(both, "Lisbon only")
    code = Question("c", "updated", "t", "Code?", "4817", ("4817",), ("m1", "m2"), "4818")
    assert answered(code, "It's 4817.") and not answered(code, "48170")


# --- the contenders --------------------------------------------------------------------------


class HashEmbedder:
    """Bag-of-words vectors from hashed words: a stand-in for the MiniLM embedder."""

    model_id = "hash-64"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % 64] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.mark.parametrize("budget", [512, 1024, 2048])
def test_every_contender_stays_within_budget(small: LongChat, budget: int) -> None:
    lineup = {**CONTENDERS, "llama-index": llamaindex_vector_memory(HashEmbedder())}
    result = evidence_recall(small, lineup, budgets=(budget,))
    for name, per in result.items():
        scores = per[budget]
        assert len(scores) == len(small.questions)
        if lineup[name].checked:  # checked in score(); counted again here
            assert max(s.tokens for s in scores) <= budget, name
    assert not lineup["llama-index"].checked
    assert min(s.tokens for s in result["llama-index"][budget]) > 0
    bm25 = result["BM25 top-k + newest (rank-bm25)"][budget]
    assert max(s.tokens for s in bm25) > budget - 60  # filled to the budget


@pytest.mark.parametrize("factory", [
    TokenBufferMemory,
    lambda budget, **o: SummaryBufferMemory(budget, KeyFactsSummarizer(), on_error="trim", **o),
])
def test_memory_view_equals_feeding_history_and_question(small: LongChat, factory) -> None:
    counter = default_counter()
    contender = memory_view(factory)
    history = list(small.messages)
    for q in small.questions[:4]:
        fresh = factory(600, counter=counter)
        for message in [*history, q.as_message()]:
            fresh.add_message(message)
        assert contender(history, q.as_message(), 600, counter) == fresh.messages()


def test_bm25_baseline_puts_matches_first_then_newest_then_question() -> None:
    counter = default_counter()
    history = [Message(role="user" if k % 2 == 0 else "assistant", id=f"h{k}",
                       content=f"filler number {k} about the weather and the news")
               for k in range(40)]
    history[6] = Message(role="user", id="h6", content="our gecko Ziggy sheds his skin")
    question = Message(role="user", content="What is my gecko called?")
    context = bm25_top_k(history, question, 200, counter)
    assert context[0].id == "h6" and context[-1] is question
    newest = context[1:-1]
    assert [m.id for m in newest] == [m.id for m in history[-len(newest):]]
    assert counter.count_messages(context) <= 200
    assert isinstance(CONTENDERS["BM25 top-k + newest (rank-bm25)"], Contender)


def test_recall_lexical_gives_recalled_turns_its_share_of_the_budget(small: LongChat) -> None:
    """The contender is a RecallMemory with ``recall_tokens = share x budget``: its recall
    block never outgrows that, and a larger share recalls at least as many turns."""
    from contextwindow.memory import RecallMemory

    counter = default_counter()
    history, question = list(small.messages), small.questions[0].as_message()
    shown = {}
    for share in (0.1, 0.4):
        context = recall_lexical(share)(history, question, 600, counter)
        fresh = RecallMemory(600, recall_tokens=int(600 * share), counter=counter)
        for message in [*history, question]:
            fresh.add_message(message)
        assert context == fresh.messages()
        block = [m for m in context if m.id == "recalled"]
        assert len(block) == 1 and counter.count_message(block[0]) <= int(600 * share)
        shown[share] = block[0].content.count("\n\n")
    assert shown[0.4] > shown[0.1]
