"""The context assembler: the layout of a context, the recall part, the fitter's modes."""

from __future__ import annotations

import math

import pytest

from contextwindow.errors import BudgetExceededError, ConfigError
from contextwindow.messages import Message, ToolCall
from contextwindow.retrieval import lexical
from contextwindow.tokens import TokenCounter
from contextwindow.window import (
    RECALL_HEADER,
    BoundedCache,
    Context,
    Fitter,
    quote,
    recall_block,
    turn_span,
    unit_span,
)

COUNTER = TokenCounter.for_model("gpt-4o")


def chat() -> list[Message]:
    """A system prompt, a fact, 30 filler turns with a tool call in turn 5, a question."""
    history = [Message(role="system", content="Be brief."),
               Message(role="user", content="My cat is called Pixel.", timestamp="2023-05-08"),
               Message(role="assistant", content="Lovely name.", timestamp="2023-05-08")]
    for i in range(30):
        history.append(Message(role="user", content=f"Gardening idea {i}, please."))
        if i == 5:
            call = ToolCall(id="c1", name="weather", arguments='{"city": "Leeds"}')
            history += [Message(role="assistant", tool_calls=(call,)),
                        Message(role="tool", content="rain", tool_call_id="c1")]
        history.append(Message(role="assistant", content=f"Idea {i}: tomatoes in the sun."))
    history.append(Message(role="user", content="What is my cat called?"))
    return history


def test_context_places_summary_after_the_head_and_the_block_before_the_newest_turn() -> None:
    history = chat()
    summary = Message(role="system", content="S")
    block = Message(role="system", content="R")
    at = len(history) - 1
    context = Context(1, at - 2, 0, summary=summary, recalled=block, recalled_at=at)
    shown = context.messages(history)
    assert shown == [history[0], summary, history[at - 2], history[at - 1], block, history[at]]
    assert context.select(history) == [history[0], *history[at - 2:]]
    assert context.dropped == at - 3


def test_turn_span_is_the_whole_exchange_with_tool_results() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    begin, end = turn_span(history, tool, 1, len(history))
    assert [m.role for m in history[begin:end]] == ["user", "assistant", "tool", "assistant"]
    assert turn_span(history, 2, 1, len(history)) == (1, 3)
    assert turn_span(history, 2, 2, len(history)) == (2, 3)  # clipped to the range


def test_quote_shows_the_date_and_the_calls() -> None:
    assert quote(Message(role="user", content="hi", timestamp="2023-05-08")) == (
        "[8 May 2023] user: hi")
    assert quote(Message(role="user", content="hi", timestamp="2023-05-08T14:05:00")) == (
        "[8 May 2023 14:05] user: hi")
    call = ToolCall(id="c", name="f", arguments="{}")
    assert quote(Message(role="assistant", tool_calls=(call,))) == "assistant: called f({})"


def test_unit_span_keeps_a_call_with_its_results() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    assert unit_span(history, tool, 1, len(history)) == (tool - 1, tool + 1)
    assert unit_span(history, tool - 1, 1, len(history)) == (tool - 1, tool + 1)
    assert unit_span(history, 2, 1, len(history)) == (2, 3)


def test_recall_block_keeps_whole_units_in_order_within_its_limit() -> None:
    history = chat()
    tool = next(k for k, m in enumerate(history) if m.role == "tool")
    block, shown, tokens = recall_block(history, [40, tool, 1, 2], 1, 50, 10_000,
                                        COUNTER.count_message)
    assert block is not None and block.role == "system"
    assert block.content.startswith(RECALL_HEADER)
    assert shown == (1, 2, tool - 1, tool, 40)  # the result came back with its call
    assert tokens == COUNTER.count_message(block)
    assert block.content.index("Pixel") < block.content.index("Idea")  # said first, shown first
    # A limit too small for any turn: nothing.
    assert recall_block(history, [1], 1, 50, 5, COUNTER.count_message) == (None, (), 0)
    # Indices outside [lo, hi) are never recalled.
    assert recall_block(history, [60], 1, 50, 10_000, COUNTER.count_message)[0] is None


def test_recall_block_quotes_a_repeated_text_once_its_best_ranked_copy() -> None:
    """Units saying word for word what a chosen unit says are passed over (the date aside),
    so the room goes to other turns; the same words from another speaker are not a copy."""
    history = [Message(role="user", content="Any tips for a long train ride?",
                       timestamp=f"2023-05-0{day}") for day in range(1, 5)]
    history += [Message(role="assistant", content="Any tips for a long train ride?"),
                Message(role="user", content="My cat is called Pixel.")]
    block, shown, tokens = recall_block(history, [2, 0, 3, 4, 5], 0, len(history), 10_000,
                                        COUNTER.count_message)
    assert shown == (2, 4, 5)
    assert block is not None and block.content.count("Any tips") == 2
    assert "[3 May 2023] user: Any tips" in block.content  # the best-ranked copy's date
    assert tokens == COUNTER.count_message(block)


def test_recall_block_counts_whole_blocks_only_when_a_fit_is_in_doubt() -> None:
    """Each limit chooses the units that counting every candidate block chooses, and the
    block returned is counted whole; with a counter whose joins cost far more than the slack
    (a quadratic price per separator) the bounds are wrong, and the block is chosen again by
    whole counts, so it still fits."""
    history = chat()
    ranked = list(range(60, 0, -3))
    calls: list[int] = []

    def count(message: Message) -> int:
        calls.append(1)
        return COUNTER.count_message(message)

    for limit in (30, 60, 100, 150, 200, 400, 10_000):
        calls.clear()
        got = recall_block(history, ranked, 1, 60, limit, count)
        assert got == recall_block(history, ranked, 1, 60, limit, COUNTER.count_message,
                                   slack=math.inf)
        assert got[2] == (COUNTER.count_message(got[0]) if got[0] else 0) <= limit
    assert len(calls) < 2 * len(ranked)  # each unit alone, a few whole blocks

    def joins_cost(message: Message) -> int:
        return COUNTER.count_message(message) + 40 * (message.content or "").count("\n\n") ** 2

    block, shown, tokens = recall_block(history, ranked, 1, 60, 400, joins_cost)
    assert (block, shown, tokens) == recall_block(history, ranked, 1, 60, 400, joins_cost,
                                                  slack=math.inf)
    assert block is not None and tokens == joins_cost(block) <= 400 and len(shown) >= 2


def test_the_recall_mode_brings_back_the_fact_within_the_budget() -> None:
    history = chat()
    fitter = Fitter(COUNTER, 400, mode="recall", rankers=lexical.ranker)
    fitted = fitter.fit(history, 100)
    assert fitted.tokens == COUNTER.count_messages(fitted.messages) <= 300
    assert fitted.messages[-1] == history[-1]
    block = fitted.messages[-2]
    assert block.content.startswith(RECALL_HEADER)
    assert "[8 May 2023] user: My cat is called Pixel." in block.content
    assert history[1] not in fitted.messages  # quoted, not shown verbatim


def test_the_fitter_refuses_unknown_modes_and_missing_parts() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'pin'"):
        Fitter(COUNTER, 400, mode="pin")
    with pytest.raises(ConfigError, match="needs a ranker"):
        Fitter(COUNTER, 400, mode="recall")
    with pytest.raises(ConfigError, match="needs a summary source"):
        Fitter(COUNTER, 400, mode="summary")
    with pytest.raises(BudgetExceededError, match="maximum context length is 64 tokens"):
        Fitter(COUNTER, 64, mode="none").fit(chat(), 10)
    assert Fitter(COUNTER, 400, mode="sinks").keep_first == 2


def test_bounded_cache_keeps_the_most_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    with pytest.raises(ConfigError):
        BoundedCache(0)


def test_a_cache_aware_fit_costs_what_its_messages_cost_as_a_request() -> None:
    """The fit's tokens come from the plan's sum; they must equal a full count of what is
    sent, with a preamble (no system message), joins of neighbours and priced tools."""
    base = TokenCounter.for_model("gpt-4o")
    counter = TokenCounter(
        "test", base.count_text, base.count_message, reply_priming=3, preamble=9,
        tool_rule=lambda tools, system: 20 * len(tools) + (0 if system is None else 2),
        joins={("tool", "tool"): -5, ("user", "assistant"): -1})
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    with_system = chat()
    cases = [(with_system, None, 0), (with_system, tools, 0), (with_system[1:], tools, 0),
             (with_system[1:], None, 1)]
    for history, given, keep_first in cases:
        fitter = Fitter(counter, 300, keep_first=keep_first)
        cut = 0
        for k in range(2, len(history) + 1):
            stored = sum(map(counter.count_message, history[:k - 1]))
            fitted = fitter.fit(history[:k], 60, counted=(k - 1, stored), tools=given)
            assert fitted.tokens == counter.count_messages(fitted.messages, given) <= 240
            cut += fitted.trimmed_messages > 0
        assert cut > 10  # most of these fits were cut
