"""RecallMemory: the newest turns plus older turns recalled from the store, exactly counted.

Exact views on every store with a recall index (the in-memory one, SQLite, Redis, PostgreSQL
through tests/store_fixtures.py), a property test over random conversations with tool calls and
random budgets, and the prompt-prefix reuse of a cache-aware recall memory measured against a
cache-aware token buffer on the same replay.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import conversations

pytest_plugins = ["store_fixtures"]
pytest.register_assert_rewrite("store_fixtures")
from store_fixtures import Backend

from contextwindow.caching import common_prefix, replay
from contextwindow.errors import BudgetExceededError
from contextwindow.memory import RecallMemory, TokenBufferMemory
from contextwindow.messages import Message, ToolCall, check_conversation
from contextwindow.samples import sample_conversation
from contextwindow.stores import InMemoryStore
from contextwindow.tokens import TokenCounter
from contextwindow.trim import CachePolicy
from contextwindow.window import RECALL_HEADER, unit_span

COUNTER = TokenCounter.approximate()
BUDGET = 600
FACT = "My sister Ingrid moved to Trondheim last spring."
QUESTION = "Which city did my sister Ingrid move to?"


def filler(turns: int, seed: int = 1) -> list[Message]:
    """Synthetic turns (tool rounds every 5th) whose words never occur in FACT or QUESTION."""
    return sample_conversation(turns, seed=seed, tool_every=5, system=None)


def fact_chat() -> list[Message]:
    """A system prompt, the dated fact and its reply, 30 filler turns, then the question."""
    return [Message(role="system", content="You are a helpful assistant."),
            Message(role="user", content=FACT, timestamp="2023-05-08"),
            Message(role="assistant", content="Noted.", timestamp="2023-05-08"),
            *filler(30),
            Message(role="user", content=QUESTION)]


def weather_chat() -> list[Message]:
    """An old turn with a tool call and its result, filler, then a question on the result."""
    call = ToolCall(id="call_w", name="weather", arguments=json.dumps({"city": "Oslo"}))
    return [Message(role="user", content="What is the weather in Oslo?"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", tool_call_id="call_w", content="drizzle, 7 degrees"),
            Message(role="assistant", content="It is wet out there."),
            *filler(30, seed=2),
            Message(role="user", content="Was there drizzle?")]


def memory_on(store, messages: list[Message], budget: int = BUDGET, **options) -> RecallMemory:
    """A recall memory fed ``messages``; one BM25 round unless ``feedback`` is given, so the
    exact-view tests see exactly what matches the question."""
    options.setdefault("feedback", 0)
    memory = RecallMemory(budget, counter=COUNTER, store=store, session="s", **options)
    for message in messages:
        memory.add_message(message)
    return memory


def assert_exact(memory: RecallMemory) -> None:
    view = memory.messages()
    assert COUNTER.count_messages(view) == memory.token_count() <= memory.max_tokens


# -- exact behaviour on every store -----------------------------------------------------------
def test_view_fits_the_budget_exactly_at_every_step(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    memory = RecallMemory(BUDGET, counter=COUNTER, store=store, session="s")
    recalled = 0
    for message in fact_chat():
        memory.add_message(message)
        if message.role != "tool":  # mid tool round the conversation is not complete
            assert_exact(memory)
            recalled += memory.plan().recalled is not None
    assert recalled > 0  # the budget is small enough that recall happens on the way


def test_a_fact_said_long_ago_comes_back_with_its_date(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    chat = fact_chat()
    memory = memory_on(store, chat)
    plan = memory.plan()
    assert plan.recall_indices == (1,)  # the fact's message, and nothing else matches
    assert plan.recalled is not None
    assert plan.recalled.content == f"{RECALL_HEADER}\n\n[8 May 2023] user: {FACT}"
    # Placement: after the stable prefix (system prompt, window), right before the question.
    assert plan.recalled_at == len(chat) - 1
    assert memory.messages() == [chat[0], *chat[plan.start:-1], plan.recalled, chat[-1]]
    assert plan.pinned == 1 and plan.start > 3  # the fact itself is out of the window
    assert memory.status().recalled == 1
    assert_exact(memory)


def test_a_reloaded_memory_gives_the_same_view(store_backend: Backend) -> None:
    store, spec = store_backend.new()
    memory = memory_on(store, fact_chat())
    again = RecallMemory(BUDGET, counter=COUNTER, store=store_backend.open(spec), session="s",
                         feedback=0)
    assert again.plan() == memory.plan()
    assert again.messages() == memory.messages()
    assert again.token_count() == memory.token_count()


def test_a_tool_call_comes_back_with_its_results(store_backend: Backend) -> None:
    store, _ = store_backend.new()
    chat = weather_chat()
    memory = memory_on(store, chat)
    plan = memory.plan()
    # "drizzle" is only in the tool result: it comes back with the call it answers.
    assert plan.recall_indices == (1, 2)
    assert plan.recalled is not None
    assert plan.recalled.content == (
        f"{RECALL_HEADER}\n\n"
        'assistant: called weather({"city": "Oslo"})\n'
        "tool result: drizzle, 7 degrees")
    check_conversation(plan.select(memory.history()))
    assert_exact(memory)


def test_feedback_finds_the_second_hop(store_backend: Backend) -> None:
    """"What does my godmother do?" matches only the turn naming her; a second BM25 round with
    that turn's words finds the turn saying what Wilhelmina does."""
    store, _ = store_backend.new()
    between = filler(12, seed=4)
    chat = [Message(role="user", content="My godmother is called Wilhelmina."),
            Message(role="assistant", content="What a grand name."),
            *between,
            Message(role="user", content="Wilhelmina qualified as a sound engineer."),
            Message(role="assistant", content="Congratulations to her."),
            *filler(30, seed=3),
            Message(role="user", content="What does my godmother do these days?")]
    hop = 2 + len(between)
    assert chat[hop].content == "Wilhelmina qualified as a sound engineer."
    single = memory_on(store, chat).plan()
    assert single.recall_indices == (0,)
    twice = memory_on(store_backend.new()[0], chat, feedback=1).plan()
    assert {0, hop} <= set(twice.recall_indices)


class TableEmbedder:
    """Vectors chosen per sentence (unit vectors in the plane of the first two axes, at the
    given angle's cosine to the query's); any other text is orthogonal to the query."""

    model_id = "table"
    dimension = 3

    def __init__(self, query: str, similarity: dict[str, float]) -> None:
        self.query = query
        self.similarity = similarity

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for row, text in enumerate(texts):
            if text == self.query:
                out[row, 0] = 1.0
            elif text in self.similarity:
                cos = self.similarity[text]
                out[row, :2] = (cos, math.sqrt(1 - cos * cos))
            else:
                out[row, 2] = 1.0
        return out


class CountingEmbedder(TableEmbedder):
    """A :class:`TableEmbedder` that remembers what it was asked to embed."""

    def __init__(self, query: str, similarity: dict[str, float]) -> None:
        super().__init__(query, similarity)
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super().embed(texts)


@pytest.mark.parametrize(("asked", "told", "first"), [
    (0.90, 0.85, "told"),  # a statement nearly as close as a question wins
    (0.90, 0.75, "asked"),  # a question far closer still wins: demoted, not banished
])
def test_dense_ranking_prefers_what_was_said_to_what_was_asked(asked: float, told: float,
                                                               first: str) -> None:
    question = "What is my cat's name?"
    texts = {"asked": "What is a good name for a cat?", "told": "Our tabby is Pixel."}
    embedder = TableEmbedder(question, {texts["asked"]: asked, texts["told"]: told})
    chat = [Message(role="user", content=texts["asked"]),
            Message(role="assistant", content="Try Biscuit."),
            Message(role="user", content=f"Sure. {texts['told']}"),
            Message(role="assistant", content="Noted."), *filler(30),
            Message(role="user", content=question)]
    store = InMemoryStore()
    memory = memory_on(store, chat, ranker="hybrid", embedder=embedder)
    ranking = memory._dense(embedder, question, 0, len(chat) - 1)
    assert ranking[0] == (0 if first == "asked" else 2)
    assert set(ranking[:2]) == {0, 2}
    # A memory over the same store reads the stored vectors: it embeds only the query.
    counting = CountingEmbedder(question, embedder.similarity)
    reloaded = RecallMemory(BUDGET, counter=COUNTER, store=store, session="s",
                            ranker="hybrid", embedder=counting)
    assert reloaded._dense(counting, question, 0, len(chat) - 1) == ranking
    assert counting.calls == [[question]]


def test_what_the_window_shows_is_never_quoted_again() -> None:
    chat = fact_chat()
    chat.insert(-1, Message(role="user", content="Ingrid says hello from Trondheim."))
    chat.insert(-1, Message(role="assistant", content="Say hello back."))
    memory = memory_on(InMemoryStore(), chat)
    plan = memory.plan()
    window = set(range(plan.start, len(chat)))
    assert {len(chat) - 3, len(chat) - 2} <= window  # the recent mention is in the window...
    assert plan.recall_indices == (1,)  # ...so only the old message is quoted
    assert plan.recalled is not None and "hello" not in plan.recalled.content


def test_nothing_is_recalled_when_the_whole_history_fits() -> None:
    chat = fact_chat()
    memory = memory_on(InMemoryStore(), chat, budget=COUNTER.count_messages(chat))
    plan = memory.plan()
    assert (plan.recalled, plan.recall_indices, plan.start) == (None, (), plan.pinned)
    assert memory.messages() == chat
    assert memory.token_count() == COUNTER.count_messages(chat)


# -- properties over random conversations -----------------------------------------------------
@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(chat=conversations(max_turns=14, max_chars=60, max_calls=2),
       budget=st.integers(20, 400), share=st.floats(0.05, 0.9), keep_first=st.integers(0, 3))
def test_recall_never_breaks_the_budget_or_the_pairing(chat: list[Message], budget: int,
                                                       share: float, keep_first: int) -> None:
    recall_tokens = min(budget - 1, max(1, int(budget * share)))
    memory = RecallMemory(budget, recall_tokens=recall_tokens, keep_first=keep_first,
                          counter=COUNTER)
    buffer = TokenBufferMemory(budget, keep_first=keep_first, counter=COUNTER)
    for message in chat:
        memory.add_message(message)
        buffer.add_message(message)
    try:
        plan = memory.plan()
    except BudgetExceededError:  # only when not even the newest turn fits the whole budget
        with pytest.raises(BudgetExceededError):
            buffer.plan()
        return
    history = memory.history()
    view = memory.messages()
    assert COUNTER.count_messages(view) == memory.token_count() <= budget
    verbatim = plan.select(history)
    check_conversation(verbatim)
    assert [m for m in view if m is not plan.recalled] == verbatim
    assert all(plan.pinned <= k < plan.start for k in plan.recall_indices)
    if plan.recalled is None:
        assert plan.recall_indices == ()
        return
    users = [k for k, m in enumerate(history) if m.role == "user"]
    assert plan.recalled_at == users[-1] >= plan.start
    assert view.index(plan.recalled) == len(view) - (len(history) - plan.recalled_at) - 1
    shown = set(plan.recall_indices)
    for k in shown:  # whole units only: a call with its results
        begin, end = unit_span(history, k, plan.pinned, plan.start)
        assert shown.issuperset(range(begin, end))


# -- the prompt cache ---------------------------------------------------------------------------
def memory_policy(memory):
    """A replay policy (:func:`contextwindow.caching.replay`) that feeds a memory what it has not
    seen and sends its view."""
    def policy(prompt: list[Message]) -> list[Message]:
        for message in prompt[len(memory):]:
            memory.add_message(message)
        return memory.messages()
    return policy


def test_cache_aware_recall_keeps_the_prefix_up_to_the_block() -> None:
    chat = sample_conversation(300, seed=0, tool_every=5)
    budget = 4000
    recall = RecallMemory(budget, recall_tokens=budget // 10, counter=COUNTER,
                          cache_policy=CachePolicy())
    views: list[tuple[list[Message], int, Message | None]] = []

    def watched(prompt: list[Message]) -> list[Message]:
        view = memory_policy(recall)(prompt)
        views.append((view, recall.plan().start, recall.plan().recalled))
        return view

    with_recall = replay(chat, watched, COUNTER, budget, name="recall")
    buffer = TokenBufferMemory(budget, counter=COUNTER, cache_policy=CachePolicy())
    without = replay(chat, memory_policy(buffer), COUNTER, budget, name="buffer")
    # Between two cuts of the cache policy, each view starts with the previous one up to its
    # block: everything before the block is served from a prefix cache.
    steady = 0
    for (before, start, block), (after, next_start, _) in itertools.pairwise(views):
        if start != next_start:
            continue
        upto = before.index(block) if block is not None else len(before)
        assert common_prefix(before, after) >= upto
        steady += 1
    assert steady > 0.9 * len(views)
    # Recall is on from the first cut on (before it the whole history fits).
    first_cut = next(k for k, (_, start, _) in enumerate(views) if start > 1)
    assert all(block is not None for _, _, block in views[first_cut:])
    assert with_recall.reuse >= 0.8 * without.reuse
